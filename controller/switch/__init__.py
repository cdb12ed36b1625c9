"""The os-ken app: holds the switch's flows and groups equal to the compiled pipeline (diff by
cookie, one bundle)."""
