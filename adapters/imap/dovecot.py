"""IMAP for the hosted mailboxes: a real Dovecot, configured, started and authenticated by the hub.

The ``imap`` listener does not speak IMAP itself. On start it

1. writes a complete Dovecot 2.3 configuration into ``run_dir`` (never a
   system file): its own ``base_dir``, loopback listeners on unprivileged
   ports (IMAP with STARTTLS, and IMAPS), the hub's TLS certificate, the
   client-certificate trust anchors, ``mail_location`` on the hub's Maildir
   root (``<mailbox_dir>/<domain>/<local part>``, what ``mailbox`` delivers
   into);
2. opens a UNIX socket on which it answers Dovecot's authentication
   requests from the hub's own mailbox list (:mod:`adapters.smtp.access`):
   Dovecot's passdb is ``checkpassword`` running
   :mod:`adapters.imap.checkpassword`, a stdlib-only forwarder, so each
   login is decided by the hub, live (a suspended mailbox is closed at the
   next login; nothing is copied into a Dovecot file);
3. runs ``dovecot -F -c <file>`` as a child process and waits until the IMAP
   port answers, then stops it (SIGTERM) with the hub.

Why checkpassword rather than a generated passwd-file, a dict or Lua:
Dovecot 2.3's EXTERNAL (certificate) and OAUTHBEARER/XOAUTH2 mechanisms all
end in a *plaintext verification* of the passdb (``mech-external.c``,
``mech-oauth2.c``: ``auth_request_verify_plain`` with an empty secret or the
token), which checkpassword hands to an external program with the mechanism
and certificate state in its environment. So one passdb covers the three
ways in, with the hub's scrypt hashes (which Dovecot cannot verify) and the
hub's token checks; a passwd-file would be a second copy of every account,
and Lua would need an extra package and a socket library.

Dovecot logs into ``run_dir/dovecot.log`` (logins name mailboxes, never
mail content). When Dovecot is not installed the listener logs a warning and
the hub runs without IMAP, unless ``required`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from pydantic import Field

from adapters.imap.autoconfig import AutoconfigConfig, autoconfig_routes
from adapters.smtp.access import AccessConfig, AccessDenied, Grant, IssuerUnavailable, MailAccess
from adapters.smtp.common import HostedMailbox, Mailboxes, host_port
from adapters.smtp.directory import open_directory
from adapters.tls import TlsConfig
from hub.errors import ConfigError
from hub.ports import InboundContext
from hub.registry import ComponentConfig, register

__all__ = ["ImapConfig", "ImapInbound", "dovecot_binary", "render_config"]

log = structlog.get_logger("hub.imap")

CHECKPASSWORD = Path(__file__).with_name("checkpassword.py")


class ImapConfig(ComponentConfig):
    listen: str | None = Field("127.0.0.1:1143", description="host:port for IMAP with STARTTLS (RFC 9051 / 3501).")
    listen_tls: str | None = Field(
        "127.0.0.1:1993", description="host:port for IMAPS, TLS from the first byte (RFC 8314); none: not opened."
    )
    hostname: str = Field("localhost", description="Name the server gives in its greeting and autoconfig.")
    tls: TlsConfig = Field(
        description="Server certificate (cert_file, key_file) and the trust anchors of client certificates "
        "(ca_file: IGC-Santé in production)."
    )
    mailbox_dir: str = Field(description="Root of the hosted Maildir mailboxes (the `mailbox` endpoint's).")
    mailboxes: list[HostedMailbox] = Field(default_factory=list, description="Mailboxes hosted by this operator.")
    mailbox_directory: str | None = Field(
        None, description="JSON file of the mailboxes created through the admin API (`hub mailbox`), re-read on change."
    )
    access: AccessConfig = Field(default_factory=AccessConfig, description="How clients prove who they are.")
    autoconfig: AutoconfigConfig | None = Field(
        default_factory=AutoconfigConfig,
        description="Client auto-configuration documents (TM3.3C) on the hub's HTTP port; none: not served.",
    )
    run_dir: str = Field("var/dovecot", description="Folder of the generated configuration, sockets and logs.")
    dovecot: str = Field("dovecot", description="The Dovecot binary (name on PATH or absolute path).")
    required: bool = Field(
        False, description="Refuse to start without Dovecot (otherwise: a warning, and the hub runs without IMAP)."
    )
    failure_delay_secs: int = Field(2, ge=0, le=60, description="Delay before a failed login is answered.")
    auth_penalty: bool = Field(
        True,
        description="Dovecot's growing delay (2 s doubling to 15 s) for an IP address after failed logins; turning "
        "it off suits only tests.",
    )
    mail_user: str = Field(
        "mail",
        description="System user Dovecot reads and writes mail as when the hub runs as root (Dovecot refuses root "
        "for mail); the Maildir root is given to it. Otherwise mail is the hub's own user's.",
    )
    retention_interval_secs: float = Field(
        3600.0, gt=0, description="How often messages past their mailbox's retention_days are expunged."
    )
    start_timeout_secs: float = Field(20.0, gt=0, description="How long to wait for Dovecot to accept connections.")


def dovecot_binary(name: str = "dovecot") -> str | None:
    """Path of the Dovecot binary, or None when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    return found


def _users() -> dict[str, str]:
    """Who Dovecot's processes run as: its packaged users under root, ourselves otherwise."""
    if os.geteuid() == 0:
        login = "dovenull" if _exists("dovenull") else "nobody"
        internal = "dovecot" if _exists("dovecot") else "nobody"
        group = grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name
        return {"login": login, "internal": internal, "internal_group": group}
    me = pwd.getpwuid(os.getuid()).pw_name
    return {"login": me, "internal": me, "internal_group": grp.getgrgid(os.getgid()).gr_name}


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the hub dies, so no Dovecot outlives its hub."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _q(path: str | Path) -> str:
    """A path as a Dovecot value: `%` is Dovecot's variable sign."""
    text = str(Path(path).resolve())
    if any(c in text for c in " \n\"'#{}"):
        raise ConfigError(f"path unusable in a Dovecot configuration: {text!r}")
    return text.replace("%", "%%")


def mail_owner(config: ImapConfig) -> tuple[int, int]:
    """(uid, gid) that owns the mail: the hub's own, or `mail_user` under root."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam(config.mail_user)
    except KeyError:
        raise ConfigError(f"mail_user {config.mail_user!r} does not exist") from None
    if entry.pw_uid == 0:
        raise ConfigError("mail_user may not be root: Dovecot refuses mail access as root")
    return entry.pw_uid, entry.pw_gid


def render_oauth2(introspection_url: str) -> str:
    """Dovecot's oauth2 passdb settings: every bearer token is introspected by the hub (RFC 7662 style)."""
    return f"""# Generated by the interop hub.
introspection_mode = post
introspection_url = {introspection_url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 20000
"""


def trust_file(config: ImapConfig, run_dir: Path) -> Path:
    """What Dovecot's ssl_ca reads: ca_file itself, or (with crl_files) the file write_trust_file makes."""
    return run_dir / "trust.pem" if config.tls.crl_files else Path(str(config.tls.ca_file))


def write_trust_file(config: ImapConfig, run_dir: Path) -> tuple[float, ...]:
    """Write ca_file and every CRL of crl_files into one PEM file for Dovecot; returns the sources' mtimes."""
    sources = [Path(str(config.tls.ca_file)), *(Path(c) for c in config.tls.crl_files)]
    stamps = tuple(src.stat().st_mtime for src in sources)
    if config.tls.crl_files:
        target = trust_file(config, run_dir)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(src.read_bytes().strip() for src in sources) + b"\n")
        tmp.replace(target)  # Dovecot never reads a half-written file
    return stamps


def render_config(config: ImapConfig, *, run_dir: Path, auth_socket: Path, name: str) -> str:
    """The complete Dovecot configuration for this listener (Dovecot 2.3 syntax)."""
    uid, gid = mail_owner(config)
    if not (config.tls.cert_file and config.tls.key_file and config.tls.ca_file):
        raise ConfigError("the imap listener needs tls.cert_file, tls.key_file and tls.ca_file")
    users = _users()
    root = os.geteuid() == 0
    listeners = []
    for label, listen, tls in (("imap", config.listen, False), ("imaps", config.listen_tls, True)):
        if listen:
            host, port = host_port(listen)
            listeners.append(
                f"  inet_listener {label} {{\n    address = {host}\n    port = {port}\n"
                + ("    ssl = yes\n" if tls else "")
                + "  }\n"
            )
    if not listeners:
        raise ConfigError("the imap listener needs listen or listen_tls")
    checkpassword = f"{_q(sys.executable)} -I -S {_q(CHECKPASSWORD)} {_q(auth_socket)}"
    if config.tls.crl_files:
        # Dovecot reads CRLs from ssl_ca (the anchors and the CRLs in one file, written by write_trust_file) and
        # then needs one for every certificate of the chain, the anchor's included (OpenSSL CRL_CHECK_ALL): the
        # IGC-Santé root and intermediates publish theirs. Dovecot has no soft mode: a missing CRL refuses.
        crl_lines = "# Client certificates are checked against the CRLs of tls.crl_files.\nssl_require_crl = yes\n"
    else:
        crl_lines = "# No tls.crl_files: no revocation check of client certificates here.\nssl_require_crl = no\n"
    maildir = _q(config.mailbox_dir)
    chroot = "" if root else "  chroot =\n"
    # Dovecot's documented switch: no anvil-auth-penalty socket for the auth process, no penalty.
    penalty = "" if config.auth_penalty else "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n"
    # Under root, mail processes (mail_user) are chrooted into the Maildir root ("<root>/./<home>", Dovecot's
    # wu-ftpd style): they need no right on the folders above it, which the hub's user may keep private.
    home = f"{maildir}/./%Ld/%Ln" if root else f"{maildir}/%Ld/%Ln"
    chroot_dirs = f"\nvalid_chroot_dirs = {maildir}" if root else ""
    return f"""# Generated by the interop hub for listener {name!r}: edit the hub's config, not this file.
instance_name = hub-{name}
base_dir = {_q(run_dir / "base")}
state_dir = {_q(run_dir / "state")}
log_path = {_q(run_dir / "dovecot.log")}
protocols = imap
listen = {host_port(config.listen or config.listen_tls or "")[0]}
shutdown_clients = yes
default_login_user = {users["login"]}
default_internal_user = {users["internal"]}
default_internal_group = {users["internal_group"]}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}

# TLS: required before any login (RFC 8314 / MSSanté TM3.1C); client certificates asked for, verified against
# the trust anchors; their {config.access.cert_username_field} names the holder for SASL EXTERNAL.
ssl = required
disable_plaintext_auth = yes
ssl_min_protocol = TLSv1.2
ssl_prefer_server_ciphers = yes
ssl_cert = <{_q(config.tls.cert_file)}
ssl_key = <{_q(config.tls.key_file)}
ssl_ca = <{_q(trust_file(config, run_dir))}
ssl_verify_client_cert = yes
{crl_lines}ssl_cert_username_field = {config.access.cert_username_field}
auth_ssl_username_from_cert = yes

auth_mechanisms = plain login external oauthbearer xoauth2
auth_username_format = %Lu
auth_verbose = yes
auth_failure_delay = {config.failure_delay_secs} secs

# Every login is decided by the hub. Passwords and certificates: checkpassword.py -> the hub's socket (the
# master passdb serves SASL EXTERNAL with an authzid: a card linked to several mailboxes names the one it
# opens). Bearer tokens (longer than checkpassword's 512 bytes): the oauth2 passdb asks the hub's introspection.
passdb {{
  driver = checkpassword
  mechanisms = external
  args = {checkpassword}
  master = yes
}}
passdb {{
  driver = checkpassword
  mechanisms = plain login external
  args = {checkpassword}
}}
passdb {{
  driver = oauth2
  mechanisms = oauthbearer xoauth2
  args = {_q(run_dir / "oauth2.conf.ext")}
}}
userdb {{
  driver = static
  args = home={home} allow_all_users=yes
}}{chroot_dirs}
# Mail is read and written as the owner of the Maildir root (the hub's user, or mail_user under root).
mail_uid = {uid}
mail_gid = {gid}

mail_location = maildir:~
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = maildir:Mailbox quota
}}
namespace inbox {{
  inbox = yes
}}

service imap-login {{
{"".join(listeners)}{chroot}}}
service anvil {{
{chroot}{penalty}}}
# The auth process runs checkpassword.py, which needs the hub's Python and socket: it runs as the hub does.
service auth {{
  user = {pwd.getpwuid(os.geteuid()).pw_name}
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
"""


@register("inbound", "imap", config=ImapConfig)
class ImapInbound:
    """IMAP access to the hosted mailboxes: Dovecot, run and authenticated by the hub."""

    def __init__(self, name: str, config: ImapConfig, ctx: InboundContext) -> None:
        self.name = name
        self.config = config
        self.access = MailAccess(
            Mailboxes(config.mailboxes, directory=open_directory(config.mailbox_directory)), config.access
        )
        self.run_dir = Path(config.run_dir).resolve()
        self.auth_socket = self.run_dir / "hub-auth.sock"
        self.available = False
        self._process: asyncio.subprocess.Process | None = None
        self._auth_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._secret = secrets.token_urlsafe(24)
        self._introspection_port = 0
        self._retention_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._crl_task: asyncio.Task[None] | None = None
        self._trust_stamps: tuple[float, ...] = ()
        self.crl_reloads = 0  # how many times new CRLs were handed to Dovecot
        self._binary, self._conf = "", Path()

    async def start(self) -> None:
        binary = dovecot_binary(self.config.dovecot)
        if binary is None:
            if self.config.required:
                raise ConfigError("Dovecot is not installed (Debian: dovecot-imapd) and the imap listener requires it")
            log.warning("imap_unavailable", listener=self.name, reason="dovecot not installed (dovecot-imapd)")
            return
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.run_dir / "state").mkdir(exist_ok=True, mode=0o700)
        (self.run_dir / "base").mkdir(exist_ok=True, mode=0o755)  # Dovecot wants its base_dir world-readable
        await asyncio.to_thread(self._own_mail)
        conf = self.run_dir / "dovecot.conf"
        self._trust_stamps = await asyncio.to_thread(write_trust_file, self.config, self.run_dir)
        conf.write_text(render_config(self.config, run_dir=self.run_dir, auth_socket=self.auth_socket, name=self.name))
        await self._start_introspection()
        oauth2 = self.run_dir / "oauth2.conf.ext"
        oauth2.write_text(render_oauth2(f"http://127.0.0.1:{self._introspection_port}/introspect/{self._secret}"))
        os.chmod(oauth2, 0o600)
        with contextlib.suppress(FileNotFoundError):
            self.auth_socket.unlink()
        self._auth_server = await asyncio.start_unix_server(self._serve_auth, path=str(self.auth_socket), limit=65536)
        os.chmod(self.auth_socket, 0o600)
        self._binary, self._conf = binary, conf
        try:
            await self._launch()
        except ConfigError:
            await self.stop()
            raise
        self.available = True
        self._watch_task = asyncio.create_task(self._watch(), name=f"{self.name}-dovecot")
        self._retention_task = asyncio.create_task(self._retention_loop(), name=f"{self.name}-retention")
        if self.config.tls.crl_files:
            self._crl_task = asyncio.create_task(self._crl_loop(), name=f"{self.name}-crls")

    def _trust_stamps_now(self) -> tuple[float, ...]:
        return tuple(Path(p).stat().st_mtime for p in (str(self.config.tls.ca_file), *self.config.tls.crl_files))

    async def _crl_loop(self) -> None:
        """New CRLs reach Dovecot without a restart: the file is rewritten and Dovecot reloads (SIGHUP, what
        ``doveadm reload`` sends), keeping the sessions already open."""
        while True:
            await asyncio.sleep(self.config.tls.crl_refresh_secs)
            try:
                if await asyncio.to_thread(self._trust_stamps_now) == self._trust_stamps:
                    continue
                self._trust_stamps = await asyncio.to_thread(write_trust_file, self.config, self.run_dir)
            except OSError as exc:  # a file being replaced: the next round reads it
                log.warning("imap_crl_unreadable", listener=self.name, error=type(exc).__name__)
                continue
            proc = self._process
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGHUP)
                self.crl_reloads += 1
                log.info("imap_crls_reloaded", listener=self.name)

    async def _launch(self) -> None:
        """Start Dovecot and wait until it greets; ConfigError with its last words when it does not."""
        err = await asyncio.to_thread(open, self.run_dir / "dovecot.stderr", "ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                self._binary, "-F", "-c", str(self._conf), stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        finally:
            err.close()
        try:
            await asyncio.wait_for(self._until_ready(), self.config.start_timeout_secs)
        except (TimeoutError, ConfigError):
            proc, self._process = self._process, None
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            tail = (self.run_dir / "dovecot.stderr").read_text(errors="replace")[-600:]
            raise ConfigError(f"Dovecot did not start for listener {self.name!r}: {tail.strip()}") from None

    async def _watch(self) -> None:
        """Dovecot is supervised: when it exits on its own it is started again, with a growing pause (1 s to
        30 s); /healthz reports the listener meanwhile."""
        delay = 1.0
        while True:
            proc = self._process
            if proc is None:
                return
            code = await proc.wait()
            log.error("imap_dovecot_exited", listener=self.name, code=code, restart_in_secs=delay)
            self.available = False
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                try:
                    await self._launch()
                except ConfigError as exc:
                    log.error("imap_dovecot_restart_failed", listener=self.name, error=str(exc)[-200:])
                    continue
                break
            self.available = True
            log.info("imap_dovecot_restarted", listener=self.name)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_interval_secs)
            try:
                await self.apply_retention()
            except Exception as exc:  # the next round tries again; nothing is lost by waiting
                log.error("imap_retention_failed", listener=self.name, error=type(exc).__name__)

    async def apply_retention(self) -> int:
        """Expunge, in each active mailbox with ``retention_days``, the messages received before that many days
        (IMAP INTERNALDATE: for Maildir the file's mtime, i.e. when the hub delivered it). Returns how many
        mailboxes were processed. Done by ``doveadm expunge`` against this Dovecot, so its indexes stay right."""
        doveadm = dovecot_binary("doveadm")
        if not self.available or doveadm is None:
            return 0
        conf = str(self.run_dir / "dovecot.conf")
        done = 0
        for box in list(self.access.mailboxes.by_address.values()):
            if box.retention_days is None or box.status != "active":
                continue
            proc = await asyncio.create_subprocess_exec(
                doveadm, "-c", conf, "expunge", "-u", box.address, "mailbox", "*", "before", f"{box.retention_days}d",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode not in (0, 68):  # 68: EX_NOUSER-like "no such mailbox yet" (nothing delivered)
                log.warning("imap_retention_error", listener=self.name, code=proc.returncode, error=err[-200:].decode(
                    errors="replace"))  # fmt: skip
                continue
            done += 1
        if done:
            log.info("imap_retention_applied", listener=self.name, mailboxes=done)
        return done

    async def _start_introspection(self) -> None:
        """Loopback HTTP endpoint for Dovecot's oauth2 passdb; its path holds a secret only Dovecot's config knows."""
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/introspect/{secret}", self._introspect)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._introspection_port = int(self._runner.addresses[0][1])  # (host, port) of the socket bound

    async def _introspect(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.match_info["secret"].encode(), self._secret.encode()):
            raise web.HTTPNotFound()
        form = await request.post()
        token = str(form.get("token", ""))
        try:
            grant = await self.access.token_mailbox(token)
        except AccessDenied as exc:
            log.info("imap_auth_refused", listener=self.name, mechanism="bearer", reason=str(exc))
            return web.json_response({"active": False})
        except IssuerUnavailable as exc:
            log.warning("imap_auth_unavailable", listener=self.name, mechanism="bearer", reason=str(exc))
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        log.debug("imap_auth_ok", listener=self.name, mechanism="bearer", method="token", kind=grant.mailbox.kind)
        body: dict[str, Any] = {"active": True, "username": grant.mailbox.address}
        return web.json_response(body)

    def _own_mail(self) -> None:
        """Make the Maildir root (and what is in it) the mail owner's: a no-op unless the hub runs as root."""
        root = Path(self.config.mailbox_dir)
        root.mkdir(parents=True, exist_ok=True)
        uid, gid = mail_owner(self.config)
        if (root.stat().st_uid, root.stat().st_gid) == (uid, gid):
            return
        os.chown(root, uid, gid)
        for folder, dirs, files in os.walk(root):
            for entry in (*dirs, *files):
                os.chown(os.path.join(folder, entry), uid, gid, follow_symlinks=False)

    async def _until_ready(self) -> None:
        host, port = host_port(self.config.listen_tls or self.config.listen or "")
        ssl_ctx = None
        if self.config.listen_tls:
            ssl_ctx = ssl.create_default_context(cafile=self.config.tls.ca_file)
            ssl_ctx.check_hostname = False
        delay = 0.02
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise ConfigError("dovecot exited")
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx)
            except OSError:
                await asyncio.sleep(delay)  # polling a port that is not open yet; backs off to 0.2 s
                delay = min(delay * 2, 0.2)
                continue
            greeting = await reader.readline()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if greeting.startswith(b"* OK"):
                return

    async def stop(self) -> None:
        for task in (self._watch_task, self._retention_task, self._crl_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch_task = self._retention_task = self._crl_task = None
        proc, self._process = self._process, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._auth_server is not None:
            self._auth_server.close()
            await self._auth_server.wait_closed()
            self._auth_server = None
        self.available = False

    def is_serving(self) -> bool:
        """For /healthz: Dovecot is running (true too when it is not installed and not required: no IMAP
        was promised, the start-up warning said so)."""
        if not self._binary:
            return not self.config.required
        return self.available and self._process is not None and self._process.returncode is None

    def http_routes(self) -> list[tuple[str, str, Any]]:
        """Autoconfig / Autodiscover on the hub's HTTP port (adapters/imap/autoconfig.py)."""
        return autoconfig_routes(self) if self.config.autoconfig is not None else []

    def admin_operations(self) -> tuple[Any, ...]:
        """Mailbox administration on the admin API, when a mailbox directory is configured."""
        if self.access.mailboxes.directory is None:
            return ()
        from adapters.smtp.admin import mailbox_operations

        return mailbox_operations(self.access.mailboxes)

    def describe(self) -> dict[str, Any]:
        return {
            "listener": self.name,
            "protocol": "imap (dovecot)" if self.available else "imap (dovecot not running)",
            "listen": self.config.listen,
            "listen_tls": self.config.listen_tls,
            "mailboxes": len(self.access.mailboxes.by_address),
        }

    # -- Dovecot's authentication requests (one JSON line each, from checkpassword.py)
    async def _serve_auth(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
            answer = await self.decide({k: str(v) for k, v in request.items()})
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def decide(self, request: dict[str, str]) -> dict[str, Any]:
        """Dovecot's request (user, secret, auth_mech, auth_cert, auth_login_user) → the hub's answer."""
        mech = request.get("auth_mech", "").upper()
        login_user = request.get("auth_login_user", "")
        try:
            grant = await self._grant(mech, request)
        except AccessDenied as exc:
            log.info("imap_auth_refused", listener=self.name, mechanism=mech[:16], reason=str(exc))
            return {"ok": False}
        except IssuerUnavailable as exc:
            log.warning("imap_auth_unavailable", listener=self.name, mechanism=mech[:16], reason=str(exc))
            return {"ok": False, "temporary": True}
        if login_user and grant.mailbox.address != login_user.lower():
            # An authzid other than the mailbox granted would make Dovecot log in as someone else.
            log.info("imap_auth_refused", listener=self.name, mechanism=mech[:16], reason="authzid not granted")
            return {"ok": False}
        log.debug("imap_auth_ok", listener=self.name, mechanism=mech[:16], method=grant.method, kind=grant.mailbox.kind)
        # The master passdb (EXTERNAL with an authzid) keeps the certificate's name; Dovecot then opens login_user.
        user = request.get("user", "") if login_user else grant.mailbox.address
        extra = {}
        if grant.mailbox.quota_bytes is not None:
            extra["userdb_quota_rule"] = f"*:bytes={grant.mailbox.quota_bytes}"
        return {"ok": True, "user": user, "extra": extra}

    async def _grant(self, mech: str, request: dict[str, str]) -> Grant:
        cert_ok = request.get("auth_cert", "") == "valid"
        user, secret = request.get("user", ""), request.get("secret", "")
        if mech == "EXTERNAL":
            return self.access.by_certificate(user if cert_ok else "", request.get("auth_login_user", ""))
        if cert_ok:
            # Dovecot names the user after the certificate whatever the mechanism (auth_ssl_username_from_cert).
            raise AccessDenied("a client presenting a certificate logs in with SASL EXTERNAL")
        if mech in ("OAUTHBEARER", "XOAUTH2"):
            return await self.access.by_token(secret, user)
        if mech in ("PLAIN", "LOGIN"):
            return await self.access.by_password(user, secret)
        raise AccessDenied("mechanism not offered")
