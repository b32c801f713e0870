"""The workflow's stages: one module per rule file (``rules/<name>.smk`` calls only
``diffxai.stages.<name>``), one function per rule. Snakemake scripts call them through
:func:`diffxai.smk.run` with the rule's inputs, outputs and params by name (per-class files as
the named mappings of :mod:`diffxai.paths`); tests call them directly. Each stage writes exactly
the paths it is given as outputs. Importing a stage module imports neither torch nor the
scientific stack: each function imports what it needs."""
