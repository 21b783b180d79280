"""Networks (``torch.nn.Module``), one model family a module. Importing this package registers every family.

Each family module decorates its builders with :func:`pointgeo.registry.register_model`; see
:mod:`pointgeo.registry` for the call conventions. Modules are discovered automatically so that adding a family
is adding one file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
