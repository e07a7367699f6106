__version__ = "0.1.0"

from .compiled import pure_python, use_source  # before any compiled module can be imported

if pure_python():
    use_source()
