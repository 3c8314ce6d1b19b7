"""Reading jaxprs in tests: every equation, those of nested jaxprs included.

A printed jaxpr is no substitute: newer JAX elides the bodies of nested
jits when it prints one.
"""

from collections.abc import Iterator


def equations(jaxpr) -> Iterator:
  """Every equation of ``jaxpr`` (a Jaxpr or ClosedJaxpr), depth first,
  through the jaxprs in equation params (jit, scan, cond, custom_vjp)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)          # a ClosedJaxpr's Jaxpr
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else [param]:
        if hasattr(getattr(sub, "jaxpr", sub), "eqns"):
          yield from equations(sub)
