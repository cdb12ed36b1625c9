"""Importing this package keeps eventlet (which ovs and os-ken pull in) from replacing
dnspython's query functions with its own "green" ones, whose arguments differ: Switchboard's
DNS client and forwarder need dnspython's."""

import os

os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")
