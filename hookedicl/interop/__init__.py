"""Adapters to other interpretability libraries.

Each adapter lives in its own submodule and imports its library only when called, so
`import hookedicl` (and `import hookedicl.interop`) never pulls them in:

    from hookedicl.interop.nnsight import wrap      # nnsight (trace-style interventions)
"""
