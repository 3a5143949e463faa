"""A real SIP registrar and proxy for the REGISTER e2e test: Debian's ``kamailio`` (5.6), run in
the foreground as a child of the test, on 127.0.0.1 only (UDP and TCP on one port), with a
config written here: ``auth`` checks digest credentials against one plain-text password
(``pv_www_authenticate``), ``registrar``/``usrloc`` keep the bindings in memory, an INVITE is
routed to the bound Contact with ``lookup("location")`` and ``t_relay()``. ``kamcmd`` (over
the ``ctl`` module's Unix socket) reads the location table."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import free_port_both

KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
KAMCMD = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/usr/local/sbin")
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# Wrong credentials: user "agent" gets 403 (as Asterisk answers), any other user a new
# challenge (kamailio's stock behaviour). A nonce lives nonce_expire s; a request with an older one
# is challenged with stale=true (www_challenge flag 16).
CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{control}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 5)
modparam("auth", "algorithm", "{algorithm}")
modparam("auth", "nonce_expire", {nonce_expire})

request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  xlog("L_INFO", "request $rm $ru from $pr:$si:$sp user $fU\\n");
  if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
  if (has_totag()) {{ if (is_method("ACK") && !t_check_trans()) exit; t_relay(); exit; }}
  if (is_method("REGISTER") && $fU == "viaproxy") {{  # challenged as a proxy would: 407
    $var(rc) = pv_proxy_authenticate("$fd", "{password}", "0");
    if ($var(rc) < 0) {{ proxy_challenge("$fd", "1"); exit; }}
    consume_credentials();
    if (!save("location")) sl_reply_error();
    exit;
  }}
  if (is_method("REGISTER")) {{
    $var(rc) = pv_www_authenticate("$td", "{password}", "0");
    if ($var(rc) == -2 && $au == "agent") {{ sl_send_reply("403", "Forbidden"); exit; }}
    if ($var(rc) == -4) {{ www_challenge("$td", "17"); exit; }}  # the nonce expired: qop=auth, stale=true
    if ($var(rc) < 0) {{ www_challenge("$td", "1"); exit; }}
    consume_credentials();
    if (!save("location")) sl_reply_error();
    exit;
  }}
  if (is_method("INVITE")) {{
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
    exit;
  }}
  sl_send_reply("405", "Method Not Allowed");
}}
"""


@dataclass
class Kamailio:
    port: int
    home: Path
    process: asyncio.subprocess.Process

    @property
    def control(self) -> Path:
        return self.home / "kamailio.ctl"

    async def contacts(self) -> list[str]:
        """The Contact URIs bound in the location table now."""
        assert KAMCMD is not None
        process = await asyncio.create_subprocess_exec(
            KAMCMD, "-s", f"unix:{self.control}", "ul.dump", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, out
        return re.findall(r"Address: (\S+)", out.decode())

    def log(self) -> str:
        return (self.home / "kamailio.log").read_text(errors="replace")


@contextlib.asynccontextmanager
async def kamailio(
    home: Path, password: str, algorithm: str = "MD5", nonce_expire: int = 30
) -> AsyncIterator[Kamailio]:
    assert KAMAILIO is not None
    port = free_port_both()
    config = home / "kamailio.cfg"
    control = home / "kamailio.ctl"
    config.write_text(
        CONFIG.format(
            port=port,
            modules=MODULES,
            control=control,
            password=password,
            algorithm=algorithm,
            nonce_expire=nonce_expire,
        )
    )
    process = await asyncio.create_subprocess_exec(
        KAMAILIO,
        "-f",
        str(config),
        "-DD",  # neither daemonize nor detach: our child, its workers its children
        "-E",  # log to stderr
        "-Y",
        str(home),
        "-P",
        str(home / "kamailio.pid"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=(home / "kamailio.log").open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    server = Kamailio(port, home, process)
    try:
        for _ in range(100):
            if control.exists() or process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        if not control.exists():
            raise RuntimeError(f"kamailio did not start: {server.log()[-3000:]}")
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
