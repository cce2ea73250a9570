"""The terminal console of ``p2pvoix host`` and ``p2pvoix join`` (textual).

- ``model``: pure; session events and the room state in, a ``View`` the widgets draw out, and
  why the room would refuse an action
- ``widgets``: the room header, the people lists, the progress and end panels, a confirmation
- ``app``: ``ConsoleApp``: opens the session while showing progress, renders it, maps keys to
  room ops (the ops of ``cli.interact.COMMANDS``) and leaves the room on quit
- ``launch``: ``run_console``: the node, the opener of the session, the exit code

Nothing here is imported unless stdout is a terminal and ``--json`` was not given.
"""
