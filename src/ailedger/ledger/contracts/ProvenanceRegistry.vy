# pragma version 0.4.3
# pragma evm-version prague
"""
@title ProvenanceRegistry
@notice Registrations of datasets and models by content digest, with their lineage, and the
        access grants their registrants give to other parties' encryption keys.
        Every registration is namespaced by its registrant (the calling account): the same
        digest may be registered by several accounts, each under its own name, and nobody
        registers, grants or revokes under another account's name. An account registers a
        digest once, with a kind, the SHA-256 of its signed statement (a DSSE envelope kept off
        chain) and up to MAX_PARENTS parents, each a (registrant, digest) pair registered
        already, so lineage crosses organisations; a registration never changes. Parents must
        exist first, so the lineage is a directed acyclic graph.
        A registrant grants and revokes access to its registration for X25519 public keys
        (32 bytes); a grant is live from `grant` until `revoke`, and may be given again later.
@dev The in-toto statement and the data stay off chain: only digests, kinds, parents and
     grants are public.
"""

MAX_PARENTS: constant(uint256) = 16

# A registration named by its registrant and its digest.
struct Ref:
    owner: address
    digest: bytes32

struct Registration:
    kind: uint8
    statement_digest: bytes32
    block_number: uint256
    timestamp: uint256

struct Grant:
    granted_block: uint256
    revoked_block: uint256

# Stored form: kind | block_number << 8 | timestamp << 72 in one slot (never zero: kind is
# nonzero), so a registration costs two new storage slots (plus its parents).
struct _Stored:
    statement_digest: bytes32
    packed: uint256

event Registered:
    owner: indexed(address)
    digest: indexed(bytes32)
    kind: uint8
    statement_digest: bytes32
    parents: DynArray[Ref, MAX_PARENTS]

# One per parent, so the children of a registration are found by filtering on the parent.
event Derived:
    parent_owner: indexed(address)
    parent: indexed(bytes32)
    child_owner: indexed(address)
    child: bytes32

event Granted:
    owner: indexed(address)
    digest: indexed(bytes32)
    recipient: indexed(bytes32)

event Revoked:
    owner: indexed(address)
    digest: indexed(bytes32)
    recipient: indexed(bytes32)

registration_count: public(uint256)
_records: HashMap[address, HashMap[bytes32, _Stored]]
_parents: HashMap[address, HashMap[bytes32, DynArray[Ref, MAX_PARENTS]]]
# packed as granted_block | revoked_block << 128; zero when never granted
_grants: HashMap[address, HashMap[bytes32, HashMap[bytes32, uint256]]]
grantee_count: public(HashMap[address, HashMap[bytes32, uint256]])
grantee_at: public(HashMap[address, HashMap[bytes32, HashMap[uint256, bytes32]]])

_MASK64: constant(uint256) = (1 << 64) - 1
_MASK128: constant(uint256) = (1 << 128) - 1


@external
def register(
    digest: bytes32,
    kind: uint8,
    statement_digest: bytes32,
    parents: DynArray[Ref, MAX_PARENTS],
):
    """
    @notice Register `digest` (of `kind`, nonzero) under the caller's name, with its signed
            statement's SHA-256 and its registered `parents`.
    """
    assert digest != empty(bytes32), "digest is zero"
    assert kind != 0, "kind is zero"
    assert statement_digest != empty(bytes32), "statement digest is zero"
    assert self._records[msg.sender][digest].packed == 0, "digest already registered"
    for i: uint256 in range(len(parents), bound=MAX_PARENTS):
        parent: Ref = parents[i]
        assert self._records[parent.owner][parent.digest].packed != 0, "parent not registered"
        for j: uint256 in range(i + 1, len(parents), bound=MAX_PARENTS):
            assert (
                parents[j].owner != parent.owner or parents[j].digest != parent.digest
            ), "parent listed twice"
    self._records[msg.sender][digest] = _Stored(
        statement_digest=statement_digest,
        packed=convert(kind, uint256) | (block.number << 8) | (block.timestamp << 72),
    )
    if len(parents) > 0:
        self._parents[msg.sender][digest] = parents
    self.registration_count += 1
    log Registered(
        owner=msg.sender,
        digest=digest,
        kind=kind,
        statement_digest=statement_digest,
        parents=parents,
    )
    for parent: Ref in parents:
        log Derived(
            parent_owner=parent.owner, parent=parent.digest, child_owner=msg.sender, child=digest
        )


@view
@external
def is_registered(owner: address, digest: bytes32) -> bool:
    return self._records[owner][digest].packed != 0


@view
@external
def registration(owner: address, digest: bytes32) -> Registration:
    """
    @notice The registration of `digest` by `owner`; reverts when there is none.
    """
    stored: _Stored = self._records[owner][digest]
    assert stored.packed != 0, "digest not registered"
    return Registration(
        kind=convert(stored.packed & 255, uint8),
        statement_digest=stored.statement_digest,
        block_number=(stored.packed >> 8) & _MASK64,
        timestamp=(stored.packed >> 72) & _MASK64,
    )


@view
@external
def parents(owner: address, digest: bytes32) -> DynArray[Ref, MAX_PARENTS]:
    """
    @notice The parents of `owner`'s registration of `digest` (empty for a root or none).
    """
    return self._parents[owner][digest]


@external
def grant(digest: bytes32, recipient: bytes32):
    """
    @notice Give the X25519 public key `recipient` access to the caller's registration of
            `digest`, when no grant of that key on it is live.
    """
    assert self._records[msg.sender][digest].packed != 0, "digest not registered"
    assert recipient != empty(bytes32), "recipient is zero"
    state: uint256 = self._grants[msg.sender][digest][recipient]
    assert state == 0 or (state >> 128) != 0, "grant already live"
    if state == 0:
        n: uint256 = self.grantee_count[msg.sender][digest]
        self.grantee_at[msg.sender][digest][n] = recipient
        self.grantee_count[msg.sender][digest] = n + 1
    self._grants[msg.sender][digest][recipient] = block.number
    log Granted(owner=msg.sender, digest=digest, recipient=recipient)


@external
def revoke(digest: bytes32, recipient: bytes32):
    """
    @notice End the live grant of `recipient` on the caller's registration of `digest`.
    """
    state: uint256 = self._grants[msg.sender][digest][recipient]
    assert state != 0 and (state >> 128) == 0, "no live grant"
    self._grants[msg.sender][digest][recipient] = state | (block.number << 128)
    log Revoked(owner=msg.sender, digest=digest, recipient=recipient)


@view
@external
def grant_of(owner: address, digest: bytes32, recipient: bytes32) -> Grant:
    """
    @notice When `owner` last granted `recipient` its registration of `digest`, and when that
            grant was revoked (zero: never, or still live).
    """
    state: uint256 = self._grants[owner][digest][recipient]
    return Grant(granted_block=state & _MASK128, revoked_block=state >> 128)


@view
@external
def is_granted(owner: address, digest: bytes32, recipient: bytes32) -> bool:
    state: uint256 = self._grants[owner][digest][recipient]
    return state != 0 and (state >> 128) == 0
