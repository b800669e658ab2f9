from twisted.application.service import ServiceMaker

cluster = ServiceMaker(
    "twistcluster",
    "twistcluster._cli.tap",
    "Run a protocol factory (or another twist plugin) on N worker processes behind one port.",
    "cluster",
)
