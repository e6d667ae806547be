"""``mmpeft chat --model DIR [--image PATH]``: talk to a checkpoint or export; replies stream as they are generated.

Each line you type is a user turn; the model answers from the whole conversation, rendered exactly as it was
trained (the model directory's saved chat format and system prompt). Commands:

    /image PATH    attach an image to your next message (repeatable; put <image> in the text to place it,
                   otherwise it goes first)
    /reset         start a new conversation
    /help          this list
    /quit          leave (so does end of input, Ctrl-D)

--image attaches an image to the first message. Reads standard input, so it also runs from a pipe or a file:
``printf 'What is this?\\n/image b.png\\nAnd this one?\\n' | mmpeft chat --model DIR --image a.png``.
A conversation longer than the model's max_length drops its oldest exchanges (--on-overflow drop_oldest, the
default) or stops with a message (error). Ctrl-C during a reply stops it; the reply is not kept.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from mmpeft.apps.inference_options import add_inference_flags, load_from_flags

COMMANDS = "/image PATH (attach to your next message), /reset, /help, /quit"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="mmpeft chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="an image for the first message (repeatable)")
    p.add_argument("--on-overflow", choices=("drop_oldest", "error"), default="drop_oldest",
                   help="a conversation over max_length: drop the oldest exchanges (default) or stop with a message")
    add_inference_flags(p)
    return p


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> list[str]:
    """Runs the chat until /quit or end of input; returns the replies in order (for tests and notebooks)."""
    from mmpeft.inference import ChatSession
    from mmpeft.inference.images import image_bytes

    args = parser().parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    for path in args.image:
        image_bytes(path, where="--image")  # a missing file fails before the model loads
    model, settings = load_from_flags(args)
    session = ChatSession(model, settings, on_overflow=args.on_overflow)
    for path in args.image:
        session.attach_image(path)  # a bad --image is an error before the conversation starts
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  - line editing and history for input()

        note = " (adapters off)" if model.base else ""
        print(f"mmpeft chat with {args.model}{note}. Commands: {COMMANDS}", file=sys.stderr)
    replies: list[str] = []
    while True:
        line = read_line(stdin, interactive)
        if line is None or line.strip() in ("/quit", "/exit"):
            break
        try:
            if not handle(line.strip(), session, stdout, replies):
                continue
        except KeyboardInterrupt:
            print("\n(reply stopped; not kept in the conversation)", file=sys.stderr)
        except ValueError as e:  # a bad image, an over-long conversation: say so and keep the conversation
            print(f"mmpeft chat: {e}", file=sys.stderr)
    return replies


def read_line(stdin: TextIO, interactive: bool) -> str | None:
    if interactive:
        try:
            return input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return None
    line = stdin.readline()
    return line.rstrip("\n") if line else None


def handle(line: str, session: Any, stdout: TextIO, replies: list[str]) -> bool:
    """Run one input line: a command or a message. Returns whether a reply was generated."""
    if not line:
        return False
    if line.startswith("/"):
        command, _, argument = line.partition(" ")
        if command == "/image" and argument.strip():
            session.attach_image(argument.strip())
            print(f"(image attached to your next message: {len(session.pending)} waiting)", file=sys.stderr)
        elif command == "/image":
            print("/image needs a path: /image PATH", file=sys.stderr)
        elif command == "/reset":
            session.reset()
            print("(new conversation)", file=sys.stderr)
        elif command == "/help":
            print(f"commands: {COMMANDS}", file=sys.stderr)
        else:
            print(f"unknown command {line!r}; commands: {COMMANDS}", file=sys.stderr)
        return False
    dropped = session.dropped_exchanges

    def emit(piece: str) -> None:
        stdout.write(piece)
        stdout.flush()

    reply = session.reply(line, stream=emit)
    stdout.write("\n")
    stdout.flush()
    if session.dropped_exchanges > dropped:
        print(f"(the conversation outgrew max_length: {session.dropped_exchanges - dropped} oldest exchange(s) "
              "dropped)", file=sys.stderr)
    if not reply:
        print("(an empty reply: the model ended its turn at once)", file=sys.stderr)
    replies.append(reply)
    return True
