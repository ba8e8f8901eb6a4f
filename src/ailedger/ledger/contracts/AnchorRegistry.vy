# pragma version 0.4.3
# pragma evm-version prague
"""
@title AnchorRegistry
@notice Append-only record of transparency-log checkpoints (origin, tree size, root hash).
        The first account to anchor an origin owns it; only that account may anchor it again,
        and each anchor of an origin must cover a strictly larger tree than the one before.
@dev An auditor reads the anchors back and checks that the log is consistent with every one.
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
    origin: indexed(bytes32)
    index: indexed(uint256)
    anchorer: indexed(address)
    size: uint64
    root: bytes32

owner_of: public(HashMap[bytes32, address])
anchor_count: public(HashMap[bytes32, uint256])
_anchors: HashMap[bytes32, HashMap[uint256, _Stored]]
_latest_size: HashMap[bytes32, uint64]


@external
def anchor(origin: bytes32, size: uint64, root: bytes32):
    """
    @notice Record that the log `origin` had `size` entries under Merkle root `root`.
    """
    assert origin != empty(bytes32), "origin is zero"
    owner: address = self.owner_of[origin]
    if owner == empty(address):
        self.owner_of[origin] = msg.sender
    else:
        assert owner == msg.sender, "origin owned by another account"
    assert size > self._latest_size[origin], "size must increase"
    n: uint256 = self.anchor_count[origin]
    packed: uint256 = (
        convert(size, uint256)
        | (block.number << 64)
        | (block.timestamp << 128)
    )
    self._anchors[origin][n] = _Stored(root=root, packed=packed)
    self._latest_size[origin] = size
    self.anchor_count[origin] = n + 1
    log Anchored(origin=origin, index=n, anchorer=msg.sender, size=size, root=root)


@view
@external
def latest(origin: bytes32) -> Anchor:
    """
    @notice The most recent anchor of `origin`; reverts when it has none.
    """
    n: uint256 = self.anchor_count[origin]
    assert n > 0, "origin has no anchors"
    return self._unpack(self._anchors[origin][n - 1])


@view
@external
def anchor_at(origin: bytes32, index: uint256) -> Anchor:
    """
    @notice The `index`-th anchor of `origin`, counting from zero.
    """
    assert index < self.anchor_count[origin], "no anchor at this index"
    return self._unpack(self._anchors[origin][index])


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
