"""Write sigproxy/data/protocols.json: signing name -> the AWS protocol the service speaks, from botocore's models.

Usage: ``python scripts/gen_protocols.py`` with botocore installed (the project's virtualenv). For each model
``botocore/data/<service>/<version>/service-2.json(.gz)`` (the newest version): the protocol botocore's clients
speak (``ServiceModel.resolved_protocol``: of ``metadata.protocols`` the first in botocore's priority order,
else ``metadata.protocol``), keyed by ``metadata.signingName`` or else ``endpointPrefix``. When several models
share a signing name and disagree, the model named like the signing name wins (``ses`` over ``sesv2``), else the
first by name, and the others are reported (the request's own hints decide for those at run time, see
sigproxy/awserrors.py).
tests/unit/test_awserrors.py checks the shipped file against the installed botocore.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from botocore.loaders import Loader
from botocore.model import ServiceModel

OUT = Path(__file__).resolve().parent.parent / "sigproxy" / "data" / "protocols.json"


def model_protocols() -> dict[str, tuple[str, str]]:
    """signing name -> (protocol, botocore service name) for every model botocore ships."""
    loader = Loader()
    table: dict[str, tuple[str, str]] = {}
    models = []
    for service in sorted(loader.list_available_services("service-2")):
        model = ServiceModel(loader.load_service_model(service, "service-2"), service)
        name = model.metadata.get("signingName") or model.metadata["endpointPrefix"]
        models.append((name != service, service, name, model.resolved_protocol))
    for _, service, name, protocol in sorted(models):  # the model named like its signing name first
        if name in table and table[name][0] != protocol:
            print(f"{name}: {table[name][1]} speaks {table[name][0]}, {service} {protocol}; keeping the first",
                  file=sys.stderr)
            continue
        table.setdefault(name, (protocol, service))
    return table


def main() -> None:
    table = {name: protocol for name, (protocol, _) in sorted(model_protocols().items())}
    OUT.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(table)} signing names to {OUT}")


if __name__ == "__main__":
    main()
