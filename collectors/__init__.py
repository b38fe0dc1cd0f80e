"""Built-in collectors. Each module registers its collector class with ``agent.registry.register``.

``BUILTIN_MODULES`` lists the modules the agent imports at start-up; a module
whose collector needs an optional library (``gpu``) imports it lazily inside
``start()`` so that importing the module costs nothing.
"""

BUILTIN_MODULES: tuple[str, ...] = (
    "collectors.cpu",
    "collectors.memory",
    "collectors.disk",
    "collectors.network",
    "collectors.processes",
    "collectors.uname",
    "collectors.os",
    "collectors.time",
    "collectors.filefd",
    "collectors.entropy",
    "collectors.selinux",
    "collectors.arp",
    "collectors.softnet",
    "collectors.udp_queues",
    "collectors.conntrack",
    "collectors.sockstat",
    "collectors.netstat",
    "collectors.hwmon",
    "collectors.interrupts",
    "collectors.systemd",
    "collectors.auth",
    "collectors.gpu",
)
