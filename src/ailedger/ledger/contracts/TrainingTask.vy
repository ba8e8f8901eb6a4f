# pragma version 0.4.3
# pragma evm-version prague
"""
@title TrainingTask
@notice Runs the rounds of many federated training tasks, each known by an id. A task has a
        fixed list of participant accounts, a number of rounds, a quorum and the digests of
        its specification and aggregation rule. Each round has three phases, each with a
        deadline in blocks:
          1. commit: a participant commits keccak256(update_digest | salt | sender), so nobody
             can copy another's update before the reveal; the phase closes early once every
             active participant has committed;
          2. reveal: it reveals (update_digest, salt); a reveal that does not open the
             commitment, a second reveal, or a digest already revealed in this task (a
             replayed old update) reverts; the phase closes early once every committer revealed;
          3. attest: each active participant recomputes the aggregate off chain and attests its
             digest (and the digest of its contribution scores); the round is finalized as soon
             as `quorum` participants attest the same aggregate digest, and fails at once if
             every active participant attested and no digest has a quorum.
        After the attest deadline anyone may `advance`: the round is finalized with the
        plurality digest if it has a quorum, else marked failed, and the next round starts, so
        a round never deadlocks. Participants vote to exclude a party (e.g. one the aggregation
        rule flagged in several rounds); it is excluded once `quorum` participants voted.
        The quorum must be a strict majority of the participants, so a minority can neither
        finalize an aggregate nor exclude anyone.
        The phase windows may change while a task runs, with no central authority: each
        active participant may propose once per round the windows of the rounds after the
        current one (`propose_windows`), each in [1, MAX_PHASE_BLOCKS]; once `quorum`
        participants proposed the same three windows in the same round, they are adopted and
        take effect when the next round starts.
        A task whose only participant is its creator is recorded by that account alone
        (`record`: one transaction per round), for a coordinator that aggregates by itself
        (simulations, a Flower server) and only publishes each round's digests.
@dev The commitment is the classic hash commitment (Blum, "Coin flipping by telephone",
     1983): hiding through the random salt, binding through the hash, and bound to the sender
     so nobody can commit a copy of another's commitment. The per-round state of a task is packed in one storage word to keep every phase
     change a warm, non-zero write.
"""

MAX_PARTICIPANTS: constant(uint256) = 64
MAX_PHASE_BLOCKS: constant(uint256) = 2**32
MAX_ROUNDS: constant(uint256) = 2**32
MAX_ENDPOINT: constant(uint256) = 256

# phases reported by `round_state`
PHASE_NONE: constant(uint8) = 0
PHASE_COMMIT: constant(uint8) = 1
PHASE_REVEAL: constant(uint8) = 2
PHASE_ATTEST: constant(uint8) = 3
PHASE_EXPIRED: constant(uint8) = 4
PHASE_FINISHED: constant(uint8) = 5

# round outcomes
OUTCOME_PENDING: constant(uint8) = 0
OUTCOME_FINALIZED: constant(uint8) = 1
OUTCOME_FAILED: constant(uint8) = 2

struct TaskInfo:
    creator: address
    spec_digest: bytes32
    rule_id: bytes32
    rounds: uint256
    quorum: uint256
    commit_blocks: uint256
    reveal_blocks: uint256
    attest_blocks: uint256
    participants: uint256
    active: uint256
    round: uint256
    finished: bool

struct RoundState:
    round: uint256
    phase: uint8
    commit_end: uint256
    reveal_end: uint256
    attest_end: uint256
    committed: uint256
    revealed: uint256
    attested: uint256
    leader: bytes32
    leader_votes: uint256

struct PartyState:
    party: address
    participant: bool
    excluded: bool
    exclusion_votes: uint256
    committed_round: uint256
    revealed_round: uint256
    attested_round: uint256
    update_digest: bytes32

struct Outcome:
    status: uint8
    aggregate_digest: bytes32
    votes: uint256

# Unpacked form of the per-round word `_round_word` (bit ranges in brackets):
# round [0,32), commit_end [32,80), reveal_end [80,128), attest_end [128,176),
# committed [176,192), revealed [192,208), attested [208,224), leader_votes [224,240),
# active [240,256).
struct _Round:
    round: uint256
    commit_end: uint256
    reveal_end: uint256
    attest_end: uint256
    committed: uint256
    revealed: uint256
    attested: uint256
    leader_votes: uint256
    active: uint256

struct _Config:
    creator: address
    spec_digest: bytes32
    rule_id: bytes32
    rounds: uint256
    quorum: uint256
    commit_blocks: uint256
    reveal_blocks: uint256
    attest_blocks: uint256

event TaskCreated:
    task: indexed(uint256)
    creator: indexed(address)
    spec_digest: bytes32
    rule_id: bytes32
    rounds: uint256
    quorum: uint256
    participants: DynArray[address, MAX_PARTICIPANTS]

event Schedule:
    task: indexed(uint256)
    round: indexed(uint256)
    commit_end: uint256
    reveal_end: uint256
    attest_end: uint256

event Announced:
    task: indexed(uint256)
    party: indexed(address)
    endpoint: String[MAX_ENDPOINT]

event Committed:
    task: indexed(uint256)
    round: indexed(uint256)
    party: indexed(address)
    commitment: bytes32

event Revealed:
    task: indexed(uint256)
    round: indexed(uint256)
    party: indexed(address)
    update_digest: bytes32

event Attested:
    task: indexed(uint256)
    round: indexed(uint256)
    party: indexed(address)
    aggregate_digest: bytes32
    scores_digest: bytes32

event RoundFinalized:
    task: indexed(uint256)
    round: indexed(uint256)
    aggregate_digest: bytes32
    votes: uint256

event RoundFailed:
    task: indexed(uint256)
    round: indexed(uint256)
    leader: bytes32
    votes: uint256

event ExclusionVoted:
    task: indexed(uint256)
    party: indexed(address)
    voter: indexed(address)
    votes: uint256

event PartyExcluded:
    task: indexed(uint256)
    party: indexed(address)
    votes: uint256

event WindowsProposed:
    task: indexed(uint256)
    round: indexed(uint256)
    party: indexed(address)
    commit_blocks: uint256
    reveal_blocks: uint256
    attest_blocks: uint256
    votes: uint256

# adopted in round `round - 1`; the windows of every round from `round` on
event WindowsChanged:
    task: indexed(uint256)
    round: indexed(uint256)
    commit_blocks: uint256
    reveal_blocks: uint256
    attest_blocks: uint256

event TaskFinished:
    task: indexed(uint256)
    finalized_rounds: uint256

task_count: public(uint256)
# `commit_blocks` of a config holds the commit window in bits [0,64) and, once a quorum
# adopted new windows in the current round, those windows (commit [64,128), reveal
# [128,192), attest [192,256)) until the next round starts: `_start_round` reads this word
# anyway, so a round start without a change costs only a shift and a test more
_config: HashMap[uint256, _Config]
_participants: HashMap[uint256, DynArray[address, MAX_PARTICIPANTS]]
_round_word: HashMap[uint256, uint256]
_leader: HashMap[uint256, bytes32]
# party word: participant bit 0, excluded bit 1, committed_round+1 [8,72),
# revealed_round+1 [72,136), attested_round+1 [136,200), exclusion votes [200,216),
# round+1 of its latest window proposal [216,256)
_party: HashMap[uint256, HashMap[address, uint256]]
_commitment: HashMap[uint256, HashMap[address, bytes32]]
# the party's latest revealed update digest (of round `revealed_round`)
_update_digest: HashMap[uint256, HashMap[address, bytes32]]
# (round + 1) << 64 | votes, so a tally left over from an earlier round reads as zero
_tally: HashMap[uint256, HashMap[bytes32, uint256]]
# the same for window proposals, keyed by commit | reveal << 64 | attest << 128
_window_tally: HashMap[uint256, HashMap[uint256, uint256]]
_revealed_digest: HashMap[uint256, HashMap[bytes32, bool]]
_exclusion_vote: HashMap[uint256, HashMap[address, HashMap[address, bool]]]
_outcome: HashMap[uint256, HashMap[uint256, uint256]]
_final_digest: HashMap[uint256, HashMap[uint256, bytes32]]
_finalized_count: HashMap[uint256, uint256]


# ----------------------------------------------------------------------------- packing


@pure
@internal
def _bits(word: uint256, offset: uint256, width: uint256) -> uint256:
    return (word >> offset) & ((1 << width) - 1)


@pure
@internal
def _with(word: uint256, offset: uint256, width: uint256, field: uint256) -> uint256:
    assert field < (1 << width), "field overflow"
    mask: uint256 = ((1 << width) - 1) << offset
    return (word & (~mask)) | (field << offset)


@view
@internal
def _load(task: uint256) -> _Round:
    w: uint256 = self._round_word[task]
    return _Round(
        round=self._bits(w, 0, 32),
        commit_end=self._bits(w, 32, 48),
        reveal_end=self._bits(w, 80, 48),
        attest_end=self._bits(w, 128, 48),
        committed=self._bits(w, 176, 16),
        revealed=self._bits(w, 192, 16),
        attested=self._bits(w, 208, 16),
        leader_votes=self._bits(w, 224, 16),
        active=self._bits(w, 240, 16),
    )


@internal
def _store(task: uint256, r: _Round):
    w: uint256 = self._with(0, 0, 32, r.round)
    w = self._with(w, 32, 48, r.commit_end)
    w = self._with(w, 80, 48, r.reveal_end)
    w = self._with(w, 128, 48, r.attest_end)
    w = self._with(w, 176, 16, r.committed)
    w = self._with(w, 192, 16, r.revealed)
    w = self._with(w, 208, 16, r.attested)
    w = self._with(w, 224, 16, r.leader_votes)
    w = self._with(w, 240, 16, r.active)
    self._round_word[task] = w


@view
@internal
def _phase(task: uint256, r: _Round) -> uint8:
    if r.round >= self._config[task].rounds:
        return PHASE_FINISHED
    if block.number < r.commit_end:
        return PHASE_COMMIT
    if block.number < r.reveal_end:
        return PHASE_REVEAL
    if block.number < r.attest_end:
        return PHASE_ATTEST
    return PHASE_EXPIRED


# ----------------------------------------------------------------------------- checks


@view
@internal
def _require_task(task: uint256):
    assert task != 0 and task <= self.task_count, "unknown task"


@view
@internal
def _require_active(task: uint256, who: address) -> uint256:
    word: uint256 = self._party[task][who]
    assert word & 1 == 1, "not a participant"
    assert word & 2 == 0, "party excluded"
    return word


@view
@internal
def _require_round(task: uint256, r: _Round, round: uint256):
    assert r.round < self._config[task].rounds, "task finished"
    assert round == r.round, "not the current round"


# ----------------------------------------------------------------------------- rounds


@internal
def _start_round(task: uint256, r: _Round):
    """Move to round r.round + 1 (or finish the task) with fresh deadlines."""
    r.round += 1
    r.committed = 0
    r.revealed = 0
    r.attested = 0
    r.leader_votes = 0
    if r.round >= self._config[task].rounds:
        r.commit_end = block.number
        r.reveal_end = block.number
        r.attest_end = block.number
        self._store(task, r)
        log TaskFinished(task=task, finalized_rounds=self._finalized_count[task])
        return
    commit_blocks: uint256 = self._config[task].commit_blocks
    if commit_blocks >> 64 != 0:
        commit_blocks = self._apply_windows(task, commit_blocks)
    r.commit_end = block.number + commit_blocks
    r.reveal_end = r.commit_end + self._config[task].reveal_blocks
    r.attest_end = r.reveal_end + self._config[task].attest_blocks
    self._store(task, r)
    log Schedule(
        task=task,
        round=r.round,
        commit_end=r.commit_end,
        reveal_end=r.reveal_end,
        attest_end=r.attest_end,
    )


@internal
def _apply_windows(task: uint256, word: uint256) -> uint256:
    """Make the windows adopted in the round just closed the task's; returns commit's."""
    commit_blocks: uint256 = self._bits(word, 64, 64)
    self._config[task].commit_blocks = commit_blocks
    self._config[task].reveal_blocks = self._bits(word, 128, 64)
    self._config[task].attest_blocks = word >> 192
    return commit_blocks


@internal
def _finalize(task: uint256, r: _Round, digest: bytes32, votes: uint256):
    self._outcome[task][r.round] = convert(OUTCOME_FINALIZED, uint256) | (votes << 8)
    self._final_digest[task][r.round] = digest
    self._finalized_count[task] += 1
    log RoundFinalized(task=task, round=r.round, aggregate_digest=digest, votes=votes)
    self._start_round(task, r)


@internal
def _fail(task: uint256, r: _Round):
    leader: bytes32 = empty(bytes32)
    if r.leader_votes > 0:
        leader = self._leader[task]
    self._outcome[task][r.round] = convert(OUTCOME_FAILED, uint256) | (r.leader_votes << 8)
    log RoundFailed(task=task, round=r.round, leader=leader, votes=r.leader_votes)
    self._start_round(task, r)


# ----------------------------------------------------------------------------- external


@external
def create_task(
    spec_digest: bytes32,
    participants: DynArray[address, MAX_PARTICIPANTS],
    rounds: uint256,
    quorum: uint256,
    rule_id: bytes32,
    commit_blocks: uint256,
    reveal_blocks: uint256,
    attest_blocks: uint256,
) -> uint256:
    """
    @notice Create a task; returns its id (1, 2, ...). Round 0 starts at once.
    @param quorum How many participants must attest the same aggregate digest (and vote to
           exclude a party); a strict majority of `participants`.
    """
    n: uint256 = len(participants)
    assert n > 0, "no participants"
    assert 2 * quorum > n and quorum <= n, "quorum must be a majority of the participants"
    assert rounds > 0 and rounds < MAX_ROUNDS, "rounds out of range"
    assert commit_blocks > 0 and commit_blocks <= MAX_PHASE_BLOCKS, "commit_blocks out of range"
    assert reveal_blocks > 0 and reveal_blocks <= MAX_PHASE_BLOCKS, "reveal_blocks out of range"
    assert attest_blocks > 0 and attest_blocks <= MAX_PHASE_BLOCKS, "attest_blocks out of range"
    task: uint256 = self.task_count + 1
    self.task_count = task
    for who: address in participants:
        assert who != empty(address), "zero address participant"
        assert self._party[task][who] == 0, "duplicate participant"
        self._party[task][who] = 1
    self._participants[task] = participants
    self._config[task] = _Config(
        creator=msg.sender,
        spec_digest=spec_digest,
        rule_id=rule_id,
        rounds=rounds,
        quorum=quorum,
        commit_blocks=commit_blocks,
        reveal_blocks=reveal_blocks,
        attest_blocks=attest_blocks,
    )
    log TaskCreated(
        task=task,
        creator=msg.sender,
        spec_digest=spec_digest,
        rule_id=rule_id,
        rounds=rounds,
        quorum=quorum,
        participants=participants,
    )
    commit_end: uint256 = block.number + commit_blocks
    r: _Round = _Round(
        round=0,
        commit_end=commit_end,
        reveal_end=commit_end + reveal_blocks,
        attest_end=commit_end + reveal_blocks + attest_blocks,
        committed=0,
        revealed=0,
        attested=0,
        leader_votes=0,
        active=n,
    )
    self._store(task, r)
    log Schedule(
        task=task,
        round=0,
        commit_end=r.commit_end,
        reveal_end=r.reveal_end,
        attest_end=r.attest_end,
    )
    return task


@external
def announce(task: uint256, endpoint: String[MAX_ENDPOINT]):
    """
    @notice Publish where this participant serves its update blobs (an event, no storage).
    """
    self._require_task(task)
    self._require_active(task, msg.sender)
    log Announced(task=task, party=msg.sender, endpoint=endpoint)


@external
def commit(task: uint256, round: uint256, commitment: bytes32):
    """
    @notice Commit to this round's update: keccak256(update_digest | salt | msg.sender).
    """
    self._require_task(task)
    word: uint256 = self._require_active(task, msg.sender)
    r: _Round = self._load(task)
    self._require_round(task, r, round)
    assert self._phase(task, r) == PHASE_COMMIT, "not in the commit phase"
    assert self._bits(word, 8, 64) != round + 1, "already committed"
    assert commitment != empty(bytes32), "empty commitment"
    self._party[task][msg.sender] = self._with(word, 8, 64, round + 1)
    self._commitment[task][msg.sender] = commitment
    r.committed += 1
    log Committed(task=task, round=round, party=msg.sender, commitment=commitment)
    if r.committed >= r.active:
        r.commit_end = block.number
        r.reveal_end = block.number + self._config[task].reveal_blocks
        r.attest_end = r.reveal_end + self._config[task].attest_blocks
        log Schedule(
            task=task,
            round=round,
            commit_end=r.commit_end,
            reveal_end=r.reveal_end,
            attest_end=r.attest_end,
        )
    self._store(task, r)


@external
def reveal(task: uint256, round: uint256, update_digest: bytes32, salt: bytes32):
    """
    @notice Open this round's commitment: the SHA-256 digest of the update blob and the salt.
    """
    self._require_task(task)
    word: uint256 = self._require_active(task, msg.sender)
    r: _Round = self._load(task)
    self._require_round(task, r, round)
    assert self._phase(task, r) == PHASE_REVEAL, "not in the reveal phase"
    assert self._bits(word, 8, 64) == round + 1, "no commitment in this round"
    assert self._bits(word, 72, 64) != round + 1, "already revealed"
    opened: bytes32 = keccak256(concat(update_digest, salt, convert(msg.sender, bytes20)))
    assert opened == self._commitment[task][msg.sender], "reveal does not match the commitment"
    assert not self._revealed_digest[task][update_digest], "update already revealed in this task"
    self._revealed_digest[task][update_digest] = True
    self._update_digest[task][msg.sender] = update_digest
    self._party[task][msg.sender] = self._with(word, 72, 64, round + 1)
    r.revealed += 1
    log Revealed(task=task, round=round, party=msg.sender, update_digest=update_digest)
    if r.revealed >= r.committed:
        r.reveal_end = block.number
        r.attest_end = block.number + self._config[task].attest_blocks
        log Schedule(
            task=task,
            round=round,
            commit_end=r.commit_end,
            reveal_end=r.reveal_end,
            attest_end=r.attest_end,
        )
    self._store(task, r)


@external
def attest(task: uint256, round: uint256, aggregate_digest: bytes32, scores_digest: bytes32):
    """
    @notice Attest the digest of the aggregate this participant recomputed, and of its
            contribution scores. Finalizes the round once `quorum` attest the same digest.
    """
    self._require_task(task)
    word: uint256 = self._require_active(task, msg.sender)
    r: _Round = self._load(task)
    self._require_round(task, r, round)
    assert self._phase(task, r) == PHASE_ATTEST, "not in the attest phase"
    assert self._bits(word, 136, 64) != round + 1, "already attested"
    self._party[task][msg.sender] = self._with(word, 136, 64, round + 1)
    tally: uint256 = self._tally[task][aggregate_digest]
    votes: uint256 = 1
    if tally >> 64 == round + 1:
        votes = (tally & ((1 << 64) - 1)) + 1
    self._tally[task][aggregate_digest] = ((round + 1) << 64) | votes
    r.attested += 1
    if votes > r.leader_votes:
        r.leader_votes = votes
        self._leader[task] = aggregate_digest
    log Attested(
        task=task,
        round=round,
        party=msg.sender,
        aggregate_digest=aggregate_digest,
        scores_digest=scores_digest,
    )
    if votes >= self._config[task].quorum:
        self._finalize(task, r, aggregate_digest, votes)
    elif r.attested >= r.active:
        self._fail(task, r)
    else:
        self._store(task, r)


@external
def advance(task: uint256):
    """
    @notice After the attest deadline, anyone may close the round: finalized with the
            plurality digest if it has a quorum, else failed. The next round starts.
    """
    self._require_task(task)
    r: _Round = self._load(task)
    phase: uint8 = self._phase(task, r)
    assert phase != PHASE_FINISHED, "task finished"
    assert phase == PHASE_EXPIRED, "round still open"
    if r.leader_votes > 0 and r.leader_votes >= self._config[task].quorum:
        self._finalize(task, r, self._leader[task], r.leader_votes)
    else:
        self._fail(task, r)


@external
def vote_exclude(task: uint256, party: address):
    """
    @notice Vote to exclude `party` from the task's later rounds; it is excluded once `quorum`
            participants voted.
    """
    self._require_task(task)
    self._require_active(task, msg.sender)
    assert self._config[task].rounds > self._bits(self._round_word[task], 0, 32), "task finished"
    assert party != msg.sender, "cannot vote to exclude yourself"
    word: uint256 = self._party[task][party]
    assert word & 1 == 1, "party is not a participant"
    assert word & 2 == 0, "party already excluded"
    assert not self._exclusion_vote[task][party][msg.sender], "already voted"
    self._exclusion_vote[task][party][msg.sender] = True
    votes: uint256 = self._bits(word, 200, 16) + 1
    word = self._with(word, 200, 16, votes)
    log ExclusionVoted(task=task, party=party, voter=msg.sender, votes=votes)
    if votes >= self._config[task].quorum:
        word = word | 2
        r: _Round = self._load(task)
        r.active -= 1
        self._store(task, r)
        log PartyExcluded(task=task, party=party, votes=votes)
    self._party[task][party] = word


@external
def propose_windows(
    task: uint256,
    round: uint256,
    commit_blocks: uint256,
    reveal_blocks: uint256,
    attest_blocks: uint256,
):
    """
    @notice Propose the phase windows (blocks) of the rounds after the current one; once
            `quorum` active participants proposed the same three in this round they are
            adopted, and apply from the next round's start. One proposal per party per round.
    """
    self._require_task(task)
    word: uint256 = self._require_active(task, msg.sender)
    r: _Round = self._load(task)
    self._require_round(task, r, round)
    assert self._bits(word, 216, 40) != round + 1, "already proposed"
    assert commit_blocks > 0 and commit_blocks <= MAX_PHASE_BLOCKS, "commit_blocks out of range"
    assert reveal_blocks > 0 and reveal_blocks <= MAX_PHASE_BLOCKS, "reveal_blocks out of range"
    assert attest_blocks > 0 and attest_blocks <= MAX_PHASE_BLOCKS, "attest_blocks out of range"
    self._party[task][msg.sender] = self._with(word, 216, 40, round + 1)
    key: uint256 = commit_blocks | (reveal_blocks << 64) | (attest_blocks << 128)
    tally: uint256 = self._window_tally[task][key]
    votes: uint256 = 1
    if tally >> 64 == round + 1:
        votes = (tally & ((1 << 64) - 1)) + 1
    self._window_tally[task][key] = ((round + 1) << 64) | votes
    log WindowsProposed(
        task=task,
        round=round,
        party=msg.sender,
        commit_blocks=commit_blocks,
        reveal_blocks=reveal_blocks,
        attest_blocks=attest_blocks,
        votes=votes,
    )
    if votes == self._config[task].quorum:
        current: uint256 = self._bits(self._config[task].commit_blocks, 0, 64)
        self._config[task].commit_blocks = (
            current | (commit_blocks << 64) | (reveal_blocks << 128) | (attest_blocks << 192)
        )
        log WindowsChanged(
            task=task,
            round=round + 1,
            commit_blocks=commit_blocks,
            reveal_blocks=reveal_blocks,
            attest_blocks=attest_blocks,
        )


@external
def record(task: uint256, round: uint256, aggregate_digest: bytes32, scores_digest: bytes32):
    """
    @notice For a task whose only participant is its creator: record the round's aggregate
            and scores digests in one transaction, finalizing the round.
    """
    self._require_task(task)
    assert msg.sender == self._config[task].creator, "only the creator records"
    assert len(self._participants[task]) == 1, "task has several participants: use commit"
    self._require_active(task, msg.sender)
    r: _Round = self._load(task)
    self._require_round(task, r, round)
    log Attested(
        task=task,
        round=round,
        party=msg.sender,
        aggregate_digest=aggregate_digest,
        scores_digest=scores_digest,
    )
    self._finalize(task, r, aggregate_digest, 1)


# ----------------------------------------------------------------------------- views


@view
@external
def task_info(task: uint256) -> TaskInfo:
    self._require_task(task)
    cfg: _Config = self._config[task]
    r: _Round = self._load(task)
    return TaskInfo(
        creator=cfg.creator,
        spec_digest=cfg.spec_digest,
        rule_id=cfg.rule_id,
        rounds=cfg.rounds,
        quorum=cfg.quorum,
        commit_blocks=self._bits(cfg.commit_blocks, 0, 64),
        reveal_blocks=cfg.reveal_blocks,
        attest_blocks=cfg.attest_blocks,
        participants=len(self._participants[task]),
        active=r.active,
        round=r.round,
        finished=r.round >= cfg.rounds,
    )


@view
@external
def pending_windows(task: uint256) -> (uint256, uint256, uint256):
    """
    @notice The windows a quorum adopted in the current round, which the next round starts
            with; zeros when none were.
    """
    self._require_task(task)
    word: uint256 = self._config[task].commit_blocks
    return self._bits(word, 64, 64), self._bits(word, 128, 64), word >> 192


@view
@external
def participants(task: uint256) -> DynArray[address, MAX_PARTICIPANTS]:
    self._require_task(task)
    return self._participants[task]


@view
@external
def round_state(task: uint256) -> RoundState:
    """
    @notice The current round, its phase at the latest block, deadlines and counters.
    """
    self._require_task(task)
    r: _Round = self._load(task)
    leader: bytes32 = empty(bytes32)
    if r.leader_votes > 0:
        leader = self._leader[task]
    return RoundState(
        round=r.round,
        phase=self._phase(task, r),
        commit_end=r.commit_end,
        reveal_end=r.reveal_end,
        attest_end=r.attest_end,
        committed=r.committed,
        revealed=r.revealed,
        attested=r.attested,
        leader=leader,
        leader_votes=r.leader_votes,
    )


@view
@internal
def _party_state(task: uint256, party: address) -> PartyState:
    word: uint256 = self._party[task][party]
    return PartyState(
        party=party,
        participant=word & 1 == 1,
        excluded=word & 2 == 2,
        exclusion_votes=self._bits(word, 200, 16),
        committed_round=self._bits(word, 8, 64),
        revealed_round=self._bits(word, 72, 64),
        attested_round=self._bits(word, 136, 64),
        update_digest=self._update_digest[task][party],
    )


@view
@external
def party_state(task: uint256, party: address) -> PartyState:
    """
    @notice Rounds are reported as round + 1 (0: never); `update_digest` is the party's
            latest revealed digest, that of round `revealed_round - 1`.
    """
    self._require_task(task)
    return self._party_state(task, party)


@view
@external
def party_states(task: uint256) -> DynArray[PartyState, MAX_PARTICIPANTS]:
    """
    @notice `party_state` of every participant, in the order of `participants`.
    """
    self._require_task(task)
    out: DynArray[PartyState, MAX_PARTICIPANTS] = []
    for who: address in self._participants[task]:
        out.append(self._party_state(task, who))
    return out


@view
@external
def outcome(task: uint256, round: uint256) -> Outcome:
    self._require_task(task)
    word: uint256 = self._outcome[task][round]
    return Outcome(
        status=convert(word & 255, uint8),
        aggregate_digest=self._final_digest[task][round],
        votes=word >> 8,
    )
