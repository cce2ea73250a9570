"""Pure core of room discovery: signed room announcements and the directory of live rooms."""
