"""A local SMTP sink for development and tests: accepts every message and writes it to a folder
as ``.eml`` files. Plain SMTP on loopback, no authentication, no relaying: never expose it.

Enough of RFC 5321 for smtplib and common clients: HELO/EHLO, MAIL, RCPT, DATA (with dot
un-stuffing), RSET, NOOP, QUIT.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

from paytide.private_files import private_directory, write_private

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class SmtpSink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # Receipts hold customers' names, emails and amounts: readable by their owner only.
        private_directory(folder)

    def messages(self) -> list[Path]:
        """Received messages, oldest first."""
        return sorted(self.folder.glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._session, host, port)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(f"{line}\r\n".encode())
            await writer.drain()

        recipients: list[str] = []
        sender: str | None = None
        try:
            await reply("220 paytide SMTP sink ready")
            while line := await reader.readline():
                command = line.decode(errors="replace").strip()
                verb = command[:4].upper()
                if verb == "EHLO":
                    await reply("250-paytide sink")
                    await reply(f"250 SIZE {MAX_MESSAGE_BYTES}")
                elif verb == "HELO":
                    await reply("250 paytide sink")
                elif verb == "MAIL":
                    sender, recipients = command[10:].strip(), []
                    await reply("250 OK")
                elif verb == "RCPT":
                    if sender is None:
                        await reply("503 MAIL first")
                        continue
                    recipients.append(command[8:].strip())
                    await reply("250 OK")
                elif verb == "DATA":
                    if not recipients:
                        await reply("503 RCPT first")
                        continue
                    await reply("354 end with <CRLF>.<CRLF>")
                    await self._store(await self._read_data(reader))
                    sender, recipients = None, []
                    await reply("250 OK: stored")
                elif verb == "RSET":
                    sender, recipients = None, []
                    await reply("250 OK")
                elif verb == "NOOP":
                    await reply("250 OK")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:
                    await reply("502 command not implemented")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _read_data(self, reader: asyncio.StreamReader) -> bytes:
        lines: list[bytes] = []
        size = 0
        while True:
            line = await reader.readline()
            if not line or line in (b".\r\n", b".\n"):
                break
            # Dot-stuffing: a leading "." was doubled by the client.
            if line.startswith(b".."):
                line = line[1:]
            size += len(line)
            if size <= MAX_MESSAGE_BYTES:
                lines.append(line)
        return b"".join(lines)

    async def _store(self, data: bytes) -> None:
        name = f"{uuid.uuid4().hex}.eml"
        partial = self.folder / f".{name}.part"
        # Written aside, then renamed: a reader never sees half a message.
        await asyncio.to_thread(write_private, partial, data)
        await asyncio.to_thread(partial.rename, self.folder / name)


async def _main(folder: Path, host: str, port: int) -> None:
    try:
        server = await SmtpSink(folder).serve(host, port)
    except OSError as error:
        raise SystemExit(
            f"the SMTP sink cannot listen on {host}:{port} ({error.strerror}); free the port or "
            "choose another with PAYTIDE_DEV_SMTP_PORT"
        ) from None
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="paytide's local SMTP sink (.eml files)")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    args = parser.parse_args()
    asyncio.run(_main(args.folder, args.host, args.port))


if __name__ == "__main__":
    main()
