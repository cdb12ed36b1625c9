"""Start the os-ken app in this process (os-ken 4.x has no manager command)."""

from __future__ import annotations

from typing import Any

from controller.switch.app import SwitchboardApp


def start_controller(
    listen_host: str = "127.0.0.1", listen_port: int = 6653, datapath_id: int | None = None
) -> tuple[SwitchboardApp, list[Any]]:
    """Load the Switchboard app with its OpenFlow listener; returns the app and its threads.
    ``datapath_id``: the only bridge it programs (None: any), known before it listens."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    cfg.CONF(
        args=[
            f"--ofp-listen-host={listen_host}",
            f"--ofp-tcp-listen-port={listen_port}",
        ],
        project="os_ken",
        default_config_files=[],
    )
    manager = AppManager.get_instance()
    SwitchboardApp.own_datapath_id = datapath_id
    manager.load_apps(["controller.switch.app"])
    contexts = manager.create_contexts()
    services = manager.instantiate_apps(**contexts)
    app = next(a for a in manager.applications.values() if isinstance(a, SwitchboardApp))
    return app, services
