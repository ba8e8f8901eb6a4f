# pragma version 0.4.3
# pragma evm-version prague
"""
@title ProvenanceRegistry
@notice Registrations of datasets and models by content digest, with their lineage, and the
        access grants their owners give to other parties' encryption keys.
        A digest is registered once, by its owner, with a kind, the SHA-256 of its signed
        statement (a DSSE envelope kept off chain) and up to MAX_PARENTS parent digests, each
        already registered; a registration never changes. Parents must exist first, so the
        lineage is a directed acyclic graph.
        The owner of a registered digest grants and revokes access to it for X25519 public keys
        (32 bytes); a grant is live from `grant` until `revoke`, and may be given again later.
@dev The in-toto statement and the data stay off chain: only digests, kinds, parents and
     grants are public.
"""

MAX_PARENTS: constant(uint256) = 16

struct Registration:
    owner: address
    kind: uint8
    statement_digest: bytes32
    block_number: uint256
    timestamp: uint256

struct Grant:
    granted_block: uint256
    revoked_block: uint256

# Stored form: owner | kind << 160 | block_number << 168 | timestamp << 212 in one slot, so a
# registration costs two new storage slots (plus its parents) instead of five.
struct _Stored:
    statement_digest: bytes32
    packed: uint256

event Registered:
    digest: indexed(bytes32)
    owner: indexed(address)
    kind: uint8
    statement_digest: bytes32
    parents: DynArray[bytes32, MAX_PARENTS]

# One per parent, so the children of a digest are found by filtering on `parent`.
event Derived:
    parent: indexed(bytes32)
    child: indexed(bytes32)

event Granted:
    digest: indexed(bytes32)
    recipient: indexed(bytes32)
    owner: indexed(address)

event Revoked:
    digest: indexed(bytes32)
    recipient: indexed(bytes32)
    owner: indexed(address)

registration_count: public(uint256)
_records: HashMap[bytes32, _Stored]
_parents: HashMap[bytes32, DynArray[bytes32, MAX_PARENTS]]
# packed as granted_block | revoked_block << 128; zero when never granted
_grants: HashMap[bytes32, HashMap[bytes32, uint256]]
grantee_count: public(HashMap[bytes32, uint256])
grantee_at: public(HashMap[bytes32, HashMap[uint256, bytes32]])

_MASK44: constant(uint256) = (1 << 44) - 1
_MASK128: constant(uint256) = (1 << 128) - 1


@external
def register(
    digest: bytes32,
    kind: uint8,
    statement_digest: bytes32,
    parents: DynArray[bytes32, MAX_PARENTS],
):
    """
    @notice Register `digest` (of `kind`, nonzero) with its signed statement's SHA-256 and its
            registered `parents`, owned by the caller.
    """
    assert digest != empty(bytes32), "digest is zero"
    assert kind != 0, "kind is zero"
    assert statement_digest != empty(bytes32), "statement digest is zero"
    assert self._records[digest].packed == 0, "digest already registered"
    for i: uint256 in range(len(parents), bound=MAX_PARENTS):
        parent: bytes32 = parents[i]
        assert self._records[parent].packed != 0, "parent not registered"
        for j: uint256 in range(i, bound=MAX_PARENTS):
            assert parents[j] != parent, "parent listed twice"
    self._records[digest] = _Stored(
        statement_digest=statement_digest,
        packed=(
            convert(msg.sender, uint256)
            | (convert(kind, uint256) << 160)
            | (block.number << 168)
            | (block.timestamp << 212)
        ),
    )
    if len(parents) > 0:
        self._parents[digest] = parents
    self.registration_count += 1
    log Registered(
        digest=digest,
        owner=msg.sender,
        kind=kind,
        statement_digest=statement_digest,
        parents=parents,
    )
    for parent: bytes32 in parents:
        log Derived(parent=parent, child=digest)


@view
@external
def is_registered(digest: bytes32) -> bool:
    return self._records[digest].packed != 0


@view
@external
def registration(digest: bytes32) -> Registration:
    """
    @notice The registration of `digest`; reverts when it is not registered.
    """
    stored: _Stored = self._records[digest]
    assert stored.packed != 0, "digest not registered"
    return Registration(
        owner=convert(convert(stored.packed & ((1 << 160) - 1), uint160), address),
        kind=convert((stored.packed >> 160) & 255, uint8),
        statement_digest=stored.statement_digest,
        block_number=(stored.packed >> 168) & _MASK44,
        timestamp=(stored.packed >> 212) & _MASK44,
    )


@view
@external
def parents(digest: bytes32) -> DynArray[bytes32, MAX_PARENTS]:
    """
    @notice The parents `digest` was registered with (empty for a root or an unknown digest).
    """
    return self._parents[digest]


@view
@internal
def _owner(digest: bytes32) -> address:
    return convert(convert(self._records[digest].packed & ((1 << 160) - 1), uint160), address)


@external
def grant(digest: bytes32, recipient: bytes32):
    """
    @notice Give the X25519 public key `recipient` access to the registered `digest`; only its
            owner may, and only when no grant of that key is live.
    """
    assert self._records[digest].packed != 0, "digest not registered"
    assert self._owner(digest) == msg.sender, "only the owner may grant"
    assert recipient != empty(bytes32), "recipient is zero"
    state: uint256 = self._grants[digest][recipient]
    assert state == 0 or (state >> 128) != 0, "grant already live"
    if state == 0:
        n: uint256 = self.grantee_count[digest]
        self.grantee_at[digest][n] = recipient
        self.grantee_count[digest] = n + 1
    self._grants[digest][recipient] = block.number
    log Granted(digest=digest, recipient=recipient, owner=msg.sender)


@external
def revoke(digest: bytes32, recipient: bytes32):
    """
    @notice End the live grant of `recipient` on `digest`; only its owner may.
    """
    assert self._owner(digest) == msg.sender, "only the owner may revoke"
    state: uint256 = self._grants[digest][recipient]
    assert state != 0 and (state >> 128) == 0, "no live grant"
    self._grants[digest][recipient] = state | (block.number << 128)
    log Revoked(digest=digest, recipient=recipient, owner=msg.sender)


@view
@external
def grant_of(digest: bytes32, recipient: bytes32) -> Grant:
    """
    @notice When `recipient` was last granted `digest` and when that grant was revoked (zero:
            never, or still live).
    """
    state: uint256 = self._grants[digest][recipient]
    return Grant(granted_block=state & _MASK128, revoked_block=state >> 128)


@view
@external
def is_granted(digest: bytes32, recipient: bytes32) -> bool:
    state: uint256 = self._grants[digest][recipient]
    return state != 0 and (state >> 128) == 0
