"""Turn a revert, as either backend reports it, into the contract's custom error and arguments.

eth-tester raises its own ``TransactionFailed("execution reverted: b'...'")``; a JSON-RPC node
makes web3 raise ``ContractCustomError`` / ``ContractLogicError`` with ``data`` in hex.
"""

from __future__ import annotations

import ast
from typing import Any

from eth_abi.abi import decode
from eth_hash.auto import keccak

ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)


def is_revert(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"TransactionFailed", "ContractCustomError", "ContractLogicError"} or (
        name == "ContractPanicError"
    )


def revert_data(exc: BaseException) -> bytes:  # noqa: PLR0911
    """The raw revert bytes carried by ``exc``, or b"" when it has none."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    text = str(exc.args[0]) if exc.args else ""
    if isinstance(exc.args[0] if exc.args else None, bytes):
        return bytes(exc.args[0])
    marker = "execution reverted: "
    if marker in text:
        tail = text.split(marker, 1)[1]
        if tail.startswith(("b'", 'b"')):
            try:
                value = ast.literal_eval(tail)
            except (ValueError, SyntaxError):
                return b""
            return value if isinstance(value, bytes) else b""
        if tail.startswith("0x"):
            return bytes.fromhex(tail[2:])
    return b""


def decode_revert(abi: list[dict[str, Any]], data: bytes) -> tuple[str, dict[str, Any]]:
    """``(error name, {argument: value})`` for ``data``; unknown data is shown in hex."""
    if len(data) < 4:
        return "Reverted", {}
    selector, body = data[:4], data[4:]
    if selector == ERROR_STRING:
        return "Error", {"message": decode(["string"], body)[0]}
    if selector == PANIC:
        return "Panic", {"code": decode(["uint256"], body)[0]}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] for i in item["inputs"]]
        if keccak(f"{item['name']}({','.join(types)})".encode())[:4] == selector:
            values = decode(types, body)
            return item["name"], {i["name"]: v for i, v in zip(item["inputs"], values, strict=True)}
    return "Reverted", {"data": data}
