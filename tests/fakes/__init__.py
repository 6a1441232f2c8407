"""Stand-ins for services that cannot run here (a CloudStack management
server).  They speak the real wire protocol; only what sits behind it is
smaller."""
