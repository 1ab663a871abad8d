"""``register_all_modules``: the OpenMMLab convention for registering a package's modules."""


def register_all_modules(init_default_scope: bool = False) -> None:
    """Import every vitzoo module that registers something (models, datasets, hooks).

    MMEngine calls this for a registry of scope ``vitzoo`` that has no ``locations`` (for
    instance a vitzoo config's metrics or visualizer). With ``init_default_scope`` the default
    scope becomes ``vitzoo``: names vitzoo does not register then resolve in the enclosing
    toolbox scope (see :mod:`vitzoo.registry`).
    """
    import vitzoo.datasets  # noqa: F401
    import vitzoo.engine  # noqa: F401
    import vitzoo.models  # noqa: F401
    if init_default_scope:
        from mmengine.registry import init_default_scope as init_scope
        init_scope('vitzoo')
