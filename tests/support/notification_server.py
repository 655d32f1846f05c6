"""A stand-in desktop notification server: owns org.freedesktop.Notifications
on the session bus DBUS_SESSION_BUS_ADDRESS names and appends each Notify
call to the file given as its argument, as a JSON line. Prints "ready" once
it owns the name."""

import json
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"


class Notifications(dbus.service.Object):
    def __init__(self, bus, log):
        super().__init__(bus, "/org/freedesktop/Notifications")
        self.log = log
        self.next_id = 1

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app_name, replaces_id, icon, summary, body, actions, hints, expire_ms):
        call = {
            "app_name": str(app_name),
            "summary": str(summary),
            "body": str(body),
            "urgency": int(hints.get("urgency", -1)),
            "expire_ms": int(expire_ms),
        }
        with open(self.log, "a") as log:
            log.write(json.dumps(call) + "\n")
        self.next_id += 1
        return self.next_id - 1

    @dbus.service.method(NAME, out_signature="ssss")
    def GetServerInformation(self):
        return ("agentwatch-test", "agentwatch", "1", "1.2")


dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SessionBus()
name = dbus.service.BusName(NAME, bus, do_not_queue=True)
server = Notifications(bus, sys.argv[1])
print("ready", flush=True)
GLib.MainLoop().run()
