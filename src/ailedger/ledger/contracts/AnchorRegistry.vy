# pragma version 0.4.3
# pragma evm-version prague
"""
@title AnchorRegistry
@notice Append-only record of transparency-log checkpoints (origin, tree size, root hash),
        kept apart for each anchoring account: an account's anchors of an origin are its own
        claims, and no account can claim, block or pre-empt the anchors of another. Within one
        (anchorer, origin) each anchor must cover a strictly larger tree than the one before.
@dev An auditor reads back the anchors of the log's operator only (the account it was told
     anchors the log) and checks that the log is consistent with every one.
"""

struct Anchor:
    size: uint64
    root: bytes32
    block_number: uint256
    timestamp: uint256

# Stored form: the root, and size | block_number << 64 | timestamp << 128 in one slot, so an
# anchor costs two new storage slots instead of four.
struct _Stored:
    root: bytes32
    packed: uint256

event Anchored:
    anchorer: indexed(address)
    origin: indexed(bytes32)
    index: indexed(uint256)
    size: uint64
    root: bytes32

anchor_count: public(HashMap[address, HashMap[bytes32, uint256]])
_anchors: HashMap[address, HashMap[bytes32, HashMap[uint256, _Stored]]]
_latest_size: HashMap[address, HashMap[bytes32, uint64]]


@external
def anchor(origin: bytes32, size: uint64, root: bytes32):
    """
    @notice Record that the log `origin`, anchored by the caller, had `size` entries under
            Merkle root `root`.
    """
    assert origin != empty(bytes32), "origin is zero"
    assert size > self._latest_size[msg.sender][origin], "size must increase"
    n: uint256 = self.anchor_count[msg.sender][origin]
    packed: uint256 = (
        convert(size, uint256)
        | (block.number << 64)
        | (block.timestamp << 128)
    )
    self._anchors[msg.sender][origin][n] = _Stored(root=root, packed=packed)
    self._latest_size[msg.sender][origin] = size
    self.anchor_count[msg.sender][origin] = n + 1
    log Anchored(anchorer=msg.sender, origin=origin, index=n, size=size, root=root)


@view
@external
def latest(anchorer: address, origin: bytes32) -> Anchor:
    """
    @notice The most recent anchor of `origin` by `anchorer`; reverts when it has none.
    """
    n: uint256 = self.anchor_count[anchorer][origin]
    assert n > 0, "origin has no anchors"
    return self._unpack(self._anchors[anchorer][origin][n - 1])


@view
@external
def anchor_at(anchorer: address, origin: bytes32, index: uint256) -> Anchor:
    """
    @notice The `index`-th anchor of `origin` by `anchorer`, counting from zero.
    """
    assert index < self.anchor_count[anchorer][origin], "no anchor at this index"
    return self._unpack(self._anchors[anchorer][origin][index])


@view
@internal
def _unpack(stored: _Stored) -> Anchor:
    mask: uint256 = (1 << 64) - 1
    return Anchor(
        size=convert(stored.packed & mask, uint64),
        root=stored.root,
        block_number=(stored.packed >> 64) & mask,
        timestamp=stored.packed >> 128,
    )
