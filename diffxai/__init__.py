"""diffxai: where along a diffusion trajectory does an ImageNet classifier start to see the class?"""
__version__ = "0.1.0"
