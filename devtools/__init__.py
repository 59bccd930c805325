"""relink's workshop: everything that helps build, run and measure relink, not relink itself.

The devstack, the provider simulator and the SMTP sink, the benchmarks and
the soak, the inline baseline and the demo seed. The product (`services`)
never imports this package; its `relink` CLI finds the workshop's commands
through the `relink.commands` entry points this distribution declares.
"""
