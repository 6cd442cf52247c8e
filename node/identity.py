"""A node's keys: who it is on the network and on the chain, and the proof that both are one.

- Ed25519 node key: the libp2p peer id; signs every message.
- X25519 key, derived from the Ed25519 key: end-to-end encryption of job data.
- secp256k1 wallet: the chain account that stakes, deposits and claims.
- Binding: both keys sign one statement naming the other, so a peer can check that the account
  paid for work belongs to the peer that did it.

Secrets live in ``HOME/keys/*.key`` with mode 0600 and are refused when others can read them.
An optional passphrase encrypts them at rest (Argon2id + XSalsa20-Poly1305 from libsodium).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address

from consensus.peer_id import peer_id_from_public_key, public_key_from_peer_id
from node.home import Home, HomeError, check_private, check_private_dir, write_atomic, write_private

BINDING_TAG = b"idlegrid/binding/v1\x00"
KEY_FILE_VERSION = 1
PassphraseSource = Callable[[], str | None]


class KeyFileError(HomeError):
    """A key file is missing, unreadable, wrongly protected or cannot be decrypted."""


@dataclass(frozen=True)
class NodeKeys:
    signing_key: nacl.signing.SigningKey
    wallet_key: bytes  # 32-byte secp256k1 private key

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_key)

    @property
    def x25519_public(self) -> bytes:
        return bytes(self.signing_key.verify_key.to_curve25519_public_key())

    @property
    def address(self) -> str:
        return str(Account.from_key(self.wallet_key).address)

    @functools.cached_property
    def chain_binding(self) -> tuple[bytes, bytes]:
        """Our chain account (20 bytes) and the wallet's binding of it to our peer id, which
        bids, hellos, attestations and verdicts carry: signed once (ECDSA), not per use."""
        return bytes.fromhex(self.address[2:]), wallet_binding(self)

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(nacl.signing.SigningKey.generate(), bytes(Account.create().key))


def binding_statement(peer_id: str, address: str) -> str:
    return f"idlegrid binding v1: peer {peer_id} controls chain account {address}"


def wallet_binding(keys: NodeKeys) -> bytes:
    """The wallet's signature (EIP-191) of the binding statement: proof to anyone who trusts
    the peer id (a message it signed carries this) that the chain account is the node's."""
    statement = binding_statement(keys.peer_id, keys.address)
    return bytes(Account.sign_message(encode_defunct(text=statement), keys.wallet_key).signature)


def wallet_binding_ok(peer_id: str, address: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``address``'s wallet binding to ``peer_id``."""
    claimed = to_checksum_address(address)
    statement = binding_statement(peer_id, claimed)
    try:
        signer = Account.recover_message(encode_defunct(text=statement), signature=signature)
    except Exception:  # malformed: not a binding at all
        return False
    return bool(signer == claimed)


def public_identity(keys: NodeKeys) -> dict[str, Any]:
    """The shareable identity document, with both signatures over the binding statement."""
    statement = binding_statement(keys.peer_id, keys.address)
    node_sig = keys.signing_key.sign(BINDING_TAG + statement.encode()).signature
    wallet_sig = wallet_binding(keys)
    return {
        "peer_id": keys.peer_id,
        "x25519_public": keys.x25519_public.hex(),
        "address": keys.address,
        "binding": {
            "statement": statement,
            "node_signature": node_sig.hex(),
            "wallet_signature": bytes(wallet_sig).hex(),
        },
    }


def verify_binding(identity: dict[str, Any]) -> None:
    """Raises ValueError unless the peer id's key and the address's key both signed the binding."""
    peer_id, address = identity["peer_id"], identity["address"]
    statement = binding_statement(peer_id, address)
    binding = identity["binding"]
    if binding["statement"] != statement:
        raise ValueError("binding statement does not name this peer id and address")
    verify_key = nacl.signing.VerifyKey(public_key_from_peer_id(peer_id))
    try:
        verify_key.verify(
            BINDING_TAG + statement.encode(), bytes.fromhex(binding["node_signature"])
        )
    except nacl.exceptions.BadSignatureError as exc:
        raise ValueError("binding: node signature does not verify") from exc
    signer = Account.recover_message(
        encode_defunct(text=statement), signature=bytes.fromhex(binding["wallet_signature"])
    )
    if signer != address:
        raise ValueError(f"binding: wallet signature is by {signer}, not {address}")


def save(home: Home, keys: NodeKeys, passphrase: str | None) -> None:
    """Writes both key files (0600) and the public identity document."""
    home.create_dirs()
    write_private(home.keys / "node.key", _seal(bytes(keys.signing_key), "ed25519", passphrase))
    write_private(home.keys / "wallet.key", _seal(keys.wallet_key, "secp256k1", passphrase))
    doc = json.dumps(public_identity(keys), indent=2) + "\n"
    write_atomic(home.identity, doc.encode())


def load(home: Home, passphrase: PassphraseSource) -> NodeKeys:
    """Reads and checks both keys; asks ``passphrase`` only when the files are encrypted."""
    home.require_initialised()
    asked: list[str | None] = []

    def ask() -> str | None:
        if not asked:
            asked.append(passphrase())
        return asked[0]

    seed = _open(home.keys / "node.key", "ed25519", ask)
    wallet = _open(home.keys / "wallet.key", "secp256k1", ask)
    keys = NodeKeys(nacl.signing.SigningKey(seed), wallet)
    recorded = read_identity(home)
    if recorded.get("peer_id") != keys.peer_id or recorded.get("address") != keys.address:
        raise KeyFileError(f"{home.identity} does not match the keys in {home.keys}")
    return keys


def read_identity(home: Home) -> dict[str, Any]:
    home.require_initialised()
    doc: dict[str, Any] = json.loads(home.identity.read_text(encoding="utf-8"))
    return doc


def _seal(secret: bytes, key_type: str, passphrase: str | None) -> bytes:
    doc: dict[str, Any] = {"version": KEY_FILE_VERSION, "type": key_type}
    if passphrase:
        kdf = nacl.pwhash.argon2id
        salt = nacl.utils.random(kdf.SALTBYTES)
        ops, mem = kdf.OPSLIMIT_INTERACTIVE, kdf.MEMLIMIT_INTERACTIVE
        box = nacl.secret.SecretBox(kdf.kdf(32, passphrase.encode(), salt, ops, mem))
        doc |= {"encryption": "argon2id+xsalsa20poly1305", "salt": salt.hex()}
        doc |= {"opslimit": ops, "memlimit": mem, "secret": bytes(box.encrypt(secret)).hex()}
    else:
        doc |= {"encryption": "none", "secret": secret.hex()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def _open(path: Path, key_type: str, passphrase: PassphraseSource) -> bytes:
    if not path.exists():
        raise KeyFileError(
            f"{path} is missing; restore it from your backup (it cannot be recreated)"
        )
    check_private_dir(path.parent)
    check_private(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["version"] != KEY_FILE_VERSION or doc["type"] != key_type:
            raise KeyFileError(f"{path}: expected a version {KEY_FILE_VERSION} {key_type} key")
        if doc["encryption"] == "none":
            return bytes.fromhex(doc["secret"])
        return _decrypt(path, doc, passphrase())
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a valid idlegrid key file ({exc})") from exc


def _decrypt(path: Path, doc: dict[str, Any], passphrase: str | None) -> bytes:
    if not passphrase:
        raise KeyFileError(
            f"{path} is encrypted: set IDLEGRID_PASSPHRASE or run from a terminal to be asked"
        )
    kdf = nacl.pwhash.argon2id
    key = kdf.kdf(
        32, passphrase.encode(), bytes.fromhex(doc["salt"]), doc["opslimit"], doc["memlimit"]
    )
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(bytes.fromhex(doc["secret"])))
    except nacl.exceptions.CryptoError:
        raise KeyFileError(f"{path}: wrong passphrase") from None
