"""vLLM integration: ``kv_connector_module_path: "kvtier.integration.vllm"``.

The connector is importable as ``UCMConnector`` (the seed deployment's name) or
``KvTierConnector`` from this package or from ``.ucm_connector``, so the seed's
launch line changes only in the module path's package prefix.
"""

from kvtier.integration.vllm.ucm_connector import (  # noqa: F401
    KvTierConnector,
    KvTierConnectorStats,
    UCMConnector,
    UCMConnectorMetadata,
)

__all__ = ["KvTierConnector", "KvTierConnectorStats", "UCMConnector", "UCMConnectorMetadata"]


def _register() -> None:
    # MultiConnector rebuilds a child's stats from its class name through the
    # factory registry, so the names must resolve there too.
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    for name in ("UCMConnector", "KvTierConnector"):
        if name not in KVConnectorFactory._registry:
            KVConnectorFactory.register_connector(name, __name__, "UCMConnector")


_register()
