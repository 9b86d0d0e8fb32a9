"""Exhaustive-interleaving model of rdq's multi-ring protocol (docs/protocol.md, rdq/ring.pxi).

Plain Python, breadth first over states; the first violation found comes with a shortest trace.

Every shared access of the real code is one step; the local computation after it is folded into
that step.  A payload slot has two words, so a torn payload is visible.  Interleavings are
sequentially consistent (release/acquire on shm is modelled as SC); what rma adds on top:

  - MPI_Put of a record does not write it at once: each word joins the rank's pending set and
    lands in the window later, in any order.  MPI_Win_flush returns only once all have landed.
    A landing nobody has read yet cannot be told from one that has not happened, so a pending
    word lands when an owner load first returns it (the load may also still return the old
    value), and the rest land at the flush: the owner sees every mixture of old and new words
    that landings at arbitrary steps give, without a state per subset of landed words.
  - put(more=True) (cfg.more: each put may say it): a checked message is staged on the rank, not
    put; the staged run's puts start (and then land as above) at the next put without more, a put
    that fills the stage (stage_max), a put without credit (before its refresh), flush() (a
    producer action whenever a run is staged) and close(); the owner's own ring never stages.
  - MPI_Get of the free list returns, for each word independently, any value the word held
    between the get and its flush: the model keeps, per word, every value seen in that window
    and lets the flush pick one per word (this covers every order of reading the words).
  - The hash is ideal: header_check = ("H", stamp, nbytes, payload_check, ring),
    payload_check = ("P", word0, word1); a check matches iff it equals what is recomputed.
    nbytes 1 is a "checked" message (payload + meta put, one flush), nbytes 2 a "large" one
    (payload put, flush, meta put with payload_check 0, flush).

Processes
  producer p (ring p):  for each message: refresh credit from the free list when used up,
                        wait (or time out: nothing written), write, then close()
  closer (variant):     a second thread of producer p's rank that calls close() at any time;
                        put() and close() hold the rank's busy flag, close() waits for it
  owner thread:         get() / get_batch(k) (ring_select and ring_delivered of rdq/ring.pxi, the
                        batch paths of rdq/queue.pxi: round robin; a ring leads with k ready, with
                        its closed producer's remainder (a shorter batch), or when it was passed
                        over and its grace elapsed; a copied batch from the lead ring or, after
                        the grace since the last arrival, from the round robin's place; end of
                        stream; refusal), releases held views in any order, and optionally puts
                        into its own ring (non-blocking) and closes it.  The clock ring_select
                        reads is a nondeterministic choice (see "owner: ring_select" below)
  second consumer:      (variant) get/get_batch from a second owner thread; both hold the busy
                        flag for the whole call, a thread that finds it held is refused
  releaser (variant):   a second owner thread releasing views while the owner is inside get()
  A release writes the free-list record of ticket returned + C under the return lock
  (entry_check, then entry, then returned += 1).

Checks (Violation, or DEADLOCK for a state with nothing enabled that is not a clean end)
  observable:  a delivered (or copied) message has the stamp, nbytes and both payload words of
               the ticket it claims; per producer FIFO and exactly once; a verified ticket and a
               held view keep their slot's contents until released; end of stream only once
               every successful put was delivered, and no put succeeds after it; no deadlock
  ghost:       (off with --observable-only) a producer writes ticket t only into the slot the
               owner handed to t; its cached credit names only slots handed to those tickets;
               the free list names each slot exactly once together with the held views
               (free-list integrity), so at most C tickets of a ring are in flight
  short batch: (observable) a batch of fewer than k is the rest of a closing producer's messages
  fairness:    (configurations with fairness=True; what a user sees as delivery order and delay)
               get() only: a ring with a sent message waits for at most P - 1 deliveries of
               other rings (the protocol's claim for get());
               with get_batch: time is free in the model, so a ring may be passed over as long
               as the grace has not elapsed; once it has (the ring was passed over with a ticket
               waiting and nothing new arrived in it), the first such ring of the round robin is
               served by the next delivery unless a ring before it leads by itself, and it waits
               through at most P - 1 deliveries of other rings (batch_fairness)
  torn reads:  (torn_reads=True, FINDINGS) an MPI_Get of the free list torn bit by bit, standing
               for the byte-wise tearing the protocol says it does not rule out

python multiring_model.py [NAME ...] [--quick | --findings] [--mutation NAME] [--observable-only]

Waiting loops (a producer without credit, the owner in ring_select) are modelled without
stuttering: a pass of the loop that found nothing blocks until a word it depends on changed
since the pass began (the loop is deterministic in those words), so a state with nothing
enabled is a real deadlock.  The one exception is a pass of get_batch that waits for the grace
period: only the clock changes its answer, so it may pass again at any time.

One deliberate difference from rdq/ring.pxi as written (FINDING, mutation end_before_reachable):
ring_select tests SELECT_END before total < reachable and counts ready before it reads the control
record, so a producer that sends its last messages and closes between those two loads ends the
stream without them.  The model tests total < reachable first (see after_scan).
"""
import argparse
import sys
import time
from collections import deque, namedtuple

CHECKED_MAX = 1      # nbytes <= CHECKED_MAX: the rma "checked" path; above: the "large" path
FETCH_MAX = 256      # records per refresh: more than any capacity modelled, so one pass reads all
INF = 1 << 40


class Violation(Exception):
    """A check failed."""


MUTATIONS = {
    "no_payload_check": "rma checked path: the owner does not compare payload_check with the payload",
    "no_middle_flush": "rma large path: no MPI_Win_flush between the payload put and the meta put",
    "entry_without_lap": "free-list entry = slot + 1, without lapbase(t): last lap's entry is accepted",
    "no_return_lock": "releases from two threads are not serialized by the return lock",
    "close_no_wait": "close() does not wait for the rank's put in progress (ignores the busy flag)",
    "close_waits_without_taking_busy": "close() waits until the busy flag is free but does not take it",
    "finish_without_count": "the owner treats a closed ring as finished without comparing delivered to n",
    "no_credit_wait": "a producer reuses its cached slot of the last lap without waiting for credit",
    "put_checks_closed_outside_busy": "put() checks the closed flag before it takes the busy flag",
    "get_leaves_busy_early": "get() leaves the busy section before it consumes the ticket it selected",
    "shm_stamp_first": "shm: the stamp is stored before the payload and nbytes",
    "no_round_robin": "ring_select always starts at ring 0 instead of after the ring that delivered last",
    "complement_check": "a record's check is ~value (rdq's first draft), not a hash of value and place: "
                        "a record torn while it is rewritten is a consistent pair",
    "end_before_reachable": "ring_select as rdq/ring.pxi has it today: SELECT_END is tested before "
                            "total < reachable, with ready counted before the control record is read",
    "passed_never_leads": "get_batch: a ring passed over with a ticket waiting never leads once its grace "
                          "elapsed (the third lead rule removed)",
    "grace_gives_short_batch": "get_batch: a passed ring whose grace elapsed returns its own fewer than k "
                               "tickets (SELECT_RING) instead of leading a copied batch of k",
    "wait_with_stage": "put(more=True): a put without credit refreshes and waits without first putting "
                       "and flushing the staged run",
    "close_drops_stage": "put(more=True): close() counts the staged messages but does not put them",
}
MUT = set()          # the seeded bugs in effect


class Cfg:
    """One configuration: transport, bounds and which threads exist."""

    def __init__(self, transport="shm", P=2, M=2, C=2, sizes=(1,), batch=(), get_single=True,
                 hold=None, ptimeouts=0, owner_msgs=0, releaser=False, closer=False, consumers=1,
                 torn_reads=False, fairness=False, observable_only=False, more=False, stage_max=2):
        assert transport in ("shm", "rma") and consumers in (1, 2)
        assert not (consumers == 2 and owner_msgs), "a second consumer would starve the owner's own puts"
        # get_batch(k) allows k up to P x C; k > C: no ring can lead by having k ready
        assert all(1 <= k <= (P + (1 if owner_msgs else 0)) * C for k in batch)
        self.transport, self.shm = transport, transport == "shm"
        self.P, self.M, self.C = P, M, C
        self.sizes = tuple(sizes)          # nbytes of message seq is sizes[seq % len(sizes)]
        self.batch = tuple(batch)          # the k of get_batch(k) the consumers may call
        self.batching = any(k > 1 for k in batch)
        self.get_single = get_single
        self.hold = C if hold is None else hold   # views the owner may hold at once
        self.ptimeouts = ptimeouts         # puts per producer that may give up when full
        self.owner_msgs = owner_msgs       # the owner puts this many into its own ring
        self.releaser, self.closer, self.consumers = releaser, closer, consumers
        # rma: a word MPI_Get reads while it changes comes back as any bitwise mixture of its values
        # (bits of the model's small numbers stand for the bytes of real ones); off: old or new
        self.torn_reads = torn_reads
        # ghost: a ring with a sent, undelivered message sees at most nrings - 1 deliveries of
        # other rings before its own (the protocol's fairness claim for get())
        self.fairness = fairness
        self.observable_only = observable_only
        # rma: each put may say more=True; a producer then stages up to stage_max messages
        self.more, self.stage_max = more, stage_max
        self.nrings = P + (1 if owner_msgs else 0)
        self.own = P if owner_msgs else None
        M = tuple(M) if isinstance(M, (tuple, list)) else (M,) * P     # messages per producer
        assert len(M) == P
        self.msgs = M + ((owner_msgs,) if owner_msgs else ())
        self.releaser_tid = consumers if releaser else None
        self.nthreads = consumers + (1 if releaser else 0)
        self.free0, self.pay0 = 2 + 4 * C, 2 + 6 * C      # one ring's words: ctrl, meta, free, payload

    # word addresses inside one ring
    def meta(self, j, w):       # w: 0 stamp, 1 nbytes, 2 payload_check, 3 header_check
        return 2 + 4 * j + w

    def free(self, j, w):       # w: 0 entry, 1 entry_check
        return self.free0 + 2 * j + w

    def pay(self, s, w):
        return self.pay0 + 2 * s + w

    def size(self, t):
        return self.sizes[t % len(self.sizes)]

    def __str__(self):
        extra = [f"{k}={v}" for k, v in (("sizes", list(self.sizes)), ("batch", list(self.batch)),
                                          ("put-timeouts", self.ptimeouts), ("owner-msgs", self.owner_msgs))
                 if v]
        extra += [name for name, on in (("releaser", self.releaser), ("closer", self.closer),
                                        ("2-consumers", self.consumers == 2),
                                        ("torn-reads", self.torn_reads),
                                        ("fairness", self.fairness),
                                        (f"more(stage {self.stage_max})", self.more),
                                        ("no-get", not self.get_single)) if on]
        return (f"{self.transport} P={self.P} M={self.M} C={self.C} hold={self.hold} " + " ".join(extra)).strip()


# --- state ---------------------------------------------------------------------------------------
# mem:     per ring a flat tuple of words: closed, closed_check, C meta records, C free records, C slots
# Prod:    a producer rank (or the owner's own ring): pc of the put()/close() thread, t = next_seq
#          (puts that returned True), credit = credit_upto, slots = cached slot per ticket % C,
#          pend = its rma writes not yet landed, buf = refresh in progress or the count a close
#          writes, dirty = the free list changed since the refresh began, tob = timeouts left,
#          closed = local flag, busy = the rank's busy flag, closer = (pc, n) of the closer thread,
#          stage = words of put(more=True) messages staged on the rank, not yet put (rma; nstaged of
#          them), more = the put in progress said more=True
# Owner:   per ring RingOwner(delivered, verified, returned, closed = cached n + 1 or 0), next_ring,
#          held views (ring, ((slot, ticket, nbytes), ...)), busy flag, return lock holder,
#          eos, got (ghost: tickets handed to the user per ring), assign (ghost: (ticket, slot)
#          last handed out per free record), own_full (the owner's last own put found its ring full),
#          waits (ghost, with cfg.fairness: deliveries of other rings each ring has waited through),
#          and what ring_select keeps for get_batch (only with a k > 1 in cfg.batch): passed and seen
#          per ring (RingOwner.passed, .seen), aged per ring (the clock: now - seen_time >= grace was
#          seen to hold), arrivals (Ring.arrivals) and quiet (now - arrival_time >= grace was seen)
# Th:      an owner thread: pc, k of the call, scan = ring_select in progress, rows = rows left to
#          copy, ret = release in progress (todo, phase, n0, continuation), dirty (as above),
#          fin = the rings a mixed batch takes from (its ring_delivered comes after the copy)

State = namedtuple("State", "mem prods owner threads")
Prod = namedtuple("Prod", "pc t credit slots pend buf dirty tob closed busy closer stage nstaged more")
RingOwner = namedtuple("RingOwner", "delivered verified returned closed")
Owner = namedtuple("Owner", "rings next_ring held busy lock eos got assign own_full waits "
                             "passed seen aged arrivals quiet")
Th = namedtuple("Th", "pc k scan rows ret dirty fin")
TH_IDLE = Th("idle", 0, None, (), None, False, None)

WRITING = ("w0", "w1", "wn", "ws", "flush", "flush1", "flush2")


def _fast_replace(cls):
    """namedtuple._replace, about twice as fast (the search spends much of its time here)."""
    index = {f: i for i, f in enumerate(cls._fields)}
    new = tuple.__new__

    def _replace(self, **kw):
        vals = list(self)
        for k, v in kw.items():
            vals[index[k]] = v
        return new(cls, vals)
    cls._replace = _replace


for _cls in (State, Prod, RingOwner, Owner, Th):
    _fast_replace(_cls)


def lapbase(cfg, t):
    return t - t % cfg.C


def free_entry(cfg, t, slot):
    return slot + 1 if "entry_without_lap" in MUT else lapbase(cfg, t) + slot + 1


def record_check(value, where):
    """rdq_check(value, where) as an ideal hash (layout.pxi free_check, closed_check)."""
    return ~value if "complement_check" in MUT else ("check", value, where)


def free_slot(cfg, t, entry, check):
    """The slot a record hands to ticket t, or -1 (layout.pxi free_slot)."""
    slot = entry - 1 - (0 if "entry_without_lap" in MUT else lapbase(cfg, t))
    return slot if check == record_check(entry, t % cfg.C) and 0 <= slot < cfg.C else -1


def record_slot(cfg, words, t):
    j = t % cfg.C
    return free_slot(cfg, t, words[cfg.free(j, 0)], words[cfg.free(j, 1)])


def payload_hash(w0, w1):
    return ("P", w0, w1)


def header_hash(stamp, nbytes, pcheck, ring):
    return ("H", stamp, nbytes, pcheck, ring)


def message_word(ring, t, nbytes):
    """Both payload words of ticket t of a ring: who wrote it, and its size."""
    return (ring, t, nbytes)


def tset(tup, i, v):
    return tup[:i] + (v,) + tup[i + 1:]


def store(mem, r, addr, val):
    words = mem[r]
    if words[addr] == val:
        return mem
    return tset(mem, r, tset(words, addr, val))


def initial(cfg):
    C = cfg.C
    words = [0, 0] + [0] * (4 * C)
    for j in range(C):
        words += [j + 1, record_check(j + 1, j)]     # entry j names slot j for ticket j
    words += [None] * (2 * C)
    mem = (tuple(words),) * cfg.nrings
    prod = Prod("idle", 0, 0, tuple(range(C)), frozenset(), None, False, cfg.ptimeouts, False, 0,
                ("start", None) if cfg.closer else None, frozenset(), 0, False)
    prods = tuple(prod._replace(closer=None, tob=0) if r == cfg.own else prod for r in range(cfg.nrings))
    rings = (RingOwner(0, 0, 0, 0),) * cfg.nrings
    assign = (tuple((j, j) for j in range(C)),) * cfg.nrings
    zeros, nos = (0,) * cfg.nrings, (False,) * cfg.nrings
    owner = Owner(rings, 0, (), 0, None, False, zeros, assign, False, zeros, nos, zeros, nos, 0, False)
    threads = (TH_IDLE,) * cfg.nthreads
    return State(mem, prods, owner, threads)


def set_prod(st, r, prod):
    return st._replace(prods=tset(st.prods, r, prod))


def set_thread(st, tid, th):
    return st._replace(threads=tset(st.threads, tid, th))


def set_ring_owner(owner, r, **kw):
    return owner._replace(rings=tset(owner.rings, r, owner.rings[r]._replace(**kw)))


# --- producer: credit -------------------------------------------------------------------------------

def refresh_words(cfg, first, n):
    """Addresses ring_refresh reads, in the order the shm loop loads them (entry, check, ...)."""
    return tuple(cfg.free((first + i) % cfg.C, w) for i in range(n) for w in (0, 1))


def start_refresh(cfg, st, r, prod):
    """ring_refresh begins: records of tickets credit .. t + C - 1 (shm loads, or one MPI_Get)."""
    first = prod.credit
    n = min(prod.t + cfg.C - first, FETCH_MAX)
    if cfg.shm:
        return prod._replace(pc="rd", buf=(first, n, ()), dirty=False)
    seen = tuple((st.mem[r][a],) for a in refresh_words(cfg, first, n))
    return prod._replace(pc="get", buf=(first, n, seen), dirty=False)


def accept_credit(cfg, prod, first, values):
    """Extend credit over the valid prefix of the records read."""
    slots, credit = prod.slots, prod.credit
    for i in range(len(values) // 2):
        slot = free_slot(cfg, first + i, values[2 * i], values[2 * i + 1])
        if slot < 0:
            break
        slots = tset(slots, (first + i) % cfg.C, slot)
        credit = first + i + 1
    return prod._replace(slots=slots, credit=credit, buf=None)


def after_refresh(cfg, st, r, prod, first, values, blocking):
    """(label, state) once the records are read: write, refresh again, wait, or Full."""
    was_dirty = prod.dirty
    prod = accept_credit(cfg, prod, first, values)
    if prod.t < prod.credit:
        return f"credit up to ticket {prod.credit - 1}", start_write(cfg, st, r, prod)
    if not blocking:
        st = st._replace(owner=st.owner._replace(own_full=True))
        return "no credit: Full (nothing written)", finish_own(set_prod(st, r, prod._replace(pc="idle")))
    # ring_put checks its deadline, then waits; if the free list changed during this pass it
    # reads it again at once (wait_steps)
    return "no credit: ring full", set_prod(st, r, prod._replace(pc="wait", dirty=was_dirty))


def refresh_read_step(cfg, st, r, blocking):
    """shm: one load of the free list."""
    prod = st.prods[r]
    first, n, vals = prod.buf
    addr = refresh_words(cfg, first, n)[len(vals)]
    vals = vals + (st.mem[r][addr],)
    what = f"read free[{(first + (len(vals) - 1) // 2) % cfg.C}].{'entry' if len(vals) % 2 else 'check'}={vals[-1]}"
    if len(vals) < 2 * n:
        return [(what, set_prod(st, r, prod._replace(buf=(first, n, vals))))]
    lbl, st2 = after_refresh(cfg, st, r, prod, first, vals, blocking)
    return [(f"{what}; {lbl}", st2)]


def refresh_flush_steps(cfg, st, r, blocking):
    """rma: MPI_Win_flush completes the get; each word is any value it held meanwhile."""
    prod = st.prods[r]
    first, n, seen = prod.buf
    choices = [()]
    for vals in seen:
        choices = [c + (v,) for c in choices for v in (mixtures(vals) if cfg.torn_reads else vals)]
    out = []
    for values in choices:
        lbl, st2 = after_refresh(cfg, st, r, prod, first, values, blocking)
        out.append((f"flush get of free list -> {values}; {lbl}", st2))
    return out


def mixtures(vals):
    """Every value whose bits each come from one of vals (a read torn bit by bit).  A torn ideal
    hash matches nothing: it stands as one value that is no check at all."""
    if any(isinstance(v, tuple) for v in vals):
        return sorted(set(vals), key=repr) + (["torn check"] if len(set(vals)) > 1 else [])
    base, diff = vals[0], 0
    for v in vals:
        diff |= v ^ base
    bits = [1 << i for i in range(diff.bit_length()) if diff >> i & 1]
    out = set()
    for m in range(1 << len(bits)):
        sub = sum(b for i, b in enumerate(bits) if m >> i & 1)
        out.add((base & ~diff) | sub)
    return sorted(out)


def wait_steps(cfg, st, r):
    prod = st.prods[r]
    out = []
    if prod.dirty:
        out.append(("free list changed: refresh again", set_prod(st, r, start_refresh(cfg, st, r, prod))))
    if prod.tob > 0:
        out.append(("timeout: Full, nothing written",
                    set_prod(st, r, prod._replace(pc="idle", tob=prod.tob - 1, busy=0, more=False))))
    return out


# --- producer: writing a message --------------------------------------------------------------------

def meta_record(ring, t, nb):
    pcheck = payload_hash(message_word(ring, t, nb), message_word(ring, t, nb)) if nb <= CHECKED_MAX else 0
    return (t + 1, nb, pcheck, header_hash(t + 1, nb, pcheck, ring))


def start_write(cfg, st, r, prod):
    """Credit known for t: shm begins its stores; rma issues its puts (local: they land later),
    after the staged run's, or (more=True, checked size) stages the message."""
    t = prod.t
    if cfg.shm:
        return set_prod(st, r, prod._replace(pc="ws" if "shm_stamp_first" in MUT else "w0"))
    slot, nb, j = prod.slots[t % cfg.C], cfg.size(t), t % cfg.C
    v = message_word(r, t, nb)
    payload = {(cfg.pay(slot, 0), v), (cfg.pay(slot, 1), v)}
    meta = set(zip((cfg.meta(j, w) for w in range(4)), meta_record(r, t, nb)))
    if prod.more and nb <= CHECKED_MAX and (r != cfg.own or "owner_stages" in MUT):
        prod = prod._replace(stage=prod.stage | payload | meta, nstaged=prod.nstaged + 1)
        if prod.nstaged < cfg.stage_max:
            return put_done(cfg, set_prod(st, r, prod), r)     # staged: put returns True
        return set_prod(st, r, issue_stage(prod)._replace(pc="flush"))   # the stage is full
    prod = issue_stage(prod)
    if nb <= CHECKED_MAX or "no_middle_flush" in MUT:
        return set_prod(st, r, prod._replace(pc="flush" if nb <= CHECKED_MAX else "flush2",
                                             pend=prod.pend | payload | meta))
    return set_prod(st, r, prod._replace(pc="flush1", pend=prod.pend | payload))


def issue_stage(prod):
    """put_staged: the staged run's MPI_Puts start (they land in any order until a flush)."""
    return prod._replace(pend=prod.pend | prod.stage, stage=frozenset(), nstaged=0)


def shm_write_step(cfg, st, r):
    """shm: memcpy (two words), nbytes, then the release store of the stamp."""
    prod = st.prods[r]
    t, pc = prod.t, prod.pc
    slot, nb, j = prod.slots[t % cfg.C], cfg.size(t), t % cfg.C
    v = message_word(r, t, nb)
    if pc == "w0":
        return [(f"write slot {slot} word 0", set_prod(st._replace(mem=store(st.mem, r, cfg.pay(slot, 0), v)), r,
                                                      prod._replace(pc="w1")))]
    if pc == "w1":
        return [(f"write slot {slot} word 1", set_prod(st._replace(mem=store(st.mem, r, cfg.pay(slot, 1), v)), r,
                                                      prod._replace(pc="wn")))]
    if pc == "wn":
        st2 = st._replace(mem=store(st.mem, r, cfg.meta(j, 1), nb))
        if "shm_stamp_first" in MUT:     # the stamp went first: this was the last store
            return [(f"write meta[{j}].nbytes={nb}: put returns True", put_done(cfg, st2, r))]
        return [(f"write meta[{j}].nbytes={nb}", set_prod(st2, r, prod._replace(pc="ws")))]
    # ws
    mem = store(st.mem, r, cfg.meta(j, 0), t + 1)
    if "shm_stamp_first" in MUT:
        return [(f"store meta[{j}].stamp={t + 1} (first)", set_prod(st._replace(mem=mem), r, prod._replace(pc="w0")))]
    return [(f"store-release meta[{j}].stamp={t + 1}: put returns True", put_done(cfg, st._replace(mem=mem), r))]


def flush_step(cfg, st, r):
    """rma: MPI_Win_flush: every pending word of the rank lands (see loads)."""
    st = land_all(cfg, st, r)
    prod = st.prods[r]
    if prod.pc == "cflush":       # ring_complete before a credit refresh; the put goes on
        return [("flush (staged run complete)", start_put(cfg, st, r, prod))]
    if prod.pc == "fflush":       # flush()
        return [("flush: flush() returns", set_prod(st, r, prod._replace(pc="idle", busy=0)))]
    if prod.pc == "flush1":       # large path: payload complete, now the meta record
        t = prod.t
        j, nb = t % cfg.C, cfg.size(t)
        meta = frozenset(zip((cfg.meta(j, w) for w in range(4)), meta_record(r, t, nb)))
        return [("flush (payload complete); put meta record", set_prod(st, r, prod._replace(pc="flush2", pend=meta)))]
    return [("flush: put returns True", put_done(cfg, st, r))]


def put_done(cfg, st, r):
    if st.owner.eos:
        raise Violation(f"PUT SUCCEEDED AFTER END OF STREAM: ring {r} ticket {st.prods[r].t}")
    prod = st.prods[r]
    st = set_prod(st, r, prod._replace(pc="idle", t=prod.t + 1, busy=0, more=False))
    return finish_own(st) if r == cfg.own else st


def start_put(cfg, st, r, prod):
    if prod.t < prod.credit or "no_credit_wait" in MUT:
        return start_write(cfg, st, r, prod)
    if prod.stage and "wait_with_stage" not in MUT:
        # the owner cannot give back slots of messages it cannot see: complete the run first
        # (rdq's flush also carries the refresh's MPI_Get; here the refresh follows it)
        return set_prod(st, r, issue_stage(prod)._replace(pc="cflush"))
    return set_prod(st, r, start_refresh(cfg, st, r, prod))


def put_choices(cfg, st, r, prod, lbl):
    """A put, and with cfg.more the same put saying more=True; flush() when a run is staged."""
    out = [(lbl, start_put(cfg, st, r, prod._replace(more=False)))]
    if cfg.more:
        out.append((lbl + " (more=True)", start_put(cfg, st, r, prod._replace(more=True))))
    return out


# --- producer: close() ------------------------------------------------------------------------------

def start_close(cfg, st, r, who, busy_taken):
    """ring_close: count n = next_seq; shm stores check then closed, rma one put and a flush."""
    prod = st.prods[r]
    n = prod.t
    pend = prod.pend
    if cfg.shm:
        pc = "c_check"
    else:
        pc = "c_flush"
        staged = frozenset() if "close_drops_stage" in MUT else prod.stage   # the run goes out with it
        pend = pend | staged | {(0, n + 1), (1, record_check(n + 1, "closed"))}
        prod = prod._replace(stage=frozenset(), nstaged=0)
    if who == "main":
        prod = prod._replace(pc=pc, buf=(n, busy_taken), pend=pend)
    else:
        prod = prod._replace(closer=(pc, (n, busy_taken)), pend=pend)
    return set_prod(st, r, prod), n


def close_steps(cfg, st, r, who):
    prod = st.prods[r]
    pc, (n, busy_taken) = (prod.pc, prod.buf) if who == "main" else prod.closer
    if pc == "c_check":
        mem = store(st.mem, r, 1, record_check(n + 1, "closed"))
        nxt = (prod._replace(pc="c_closed") if who == "main" else prod._replace(closer=("c_closed", (n, busy_taken))))
        return [(f"store closed_check for {n + 1}", set_prod(st._replace(mem=mem), r, nxt))]
    if pc == "c_closed":
        st2 = st._replace(mem=store(st.mem, r, 0, n + 1))
        return [(f"store closed={n + 1}: closed", finish_close(cfg, st2, r, who, busy_taken))]
    return [("flush: closed", finish_close(cfg, land_all(cfg, st, r), r, who, busy_taken))]


def finish_close(cfg, st, r, who, busy_taken):
    prod = st.prods[r]._replace(closed=True)
    if busy_taken:
        prod = prod._replace(busy=0)
    if who == "main":
        prod = prod._replace(pc="done", buf=None)
    else:
        prod = prod._replace(closer=("done", None))
    st = set_prod(st, r, prod)
    return finish_own(st) if r == cfg.own else st


# --- producer threads -------------------------------------------------------------------------------

def machine_steps(cfg, st, r, blocking):
    """Steps of a put() or close() in progress on ring r's main thread."""
    pc = st.prods[r].pc
    if pc == "rd":
        return refresh_read_step(cfg, st, r, blocking)
    if pc == "get":
        return refresh_flush_steps(cfg, st, r, blocking)
    if pc == "wait":
        return wait_steps(cfg, st, r)
    if pc in ("w0", "w1", "wn", "ws"):
        return shm_write_step(cfg, st, r)
    if pc in ("flush", "flush1", "flush2", "cflush", "fflush"):
        return flush_step(cfg, st, r)
    if pc in ("c_check", "c_closed", "c_flush"):
        return close_steps(cfg, st, r, "main")
    raise AssertionError(pc)


def producer_idle_steps(cfg, st, r):
    prod = st.prods[r]
    if prod.stage and not prod.busy:     # flush() (it takes the busy flag, as put() does)
        flushes = [("flush(): put the staged run",
                    set_prod(st, r, issue_stage(prod)._replace(pc="fflush", busy=1 if cfg.closer else 0)))]
    else:
        flushes = []
    return flushes + put_or_close_steps(cfg, st, r)


def put_or_close_steps(cfg, st, r):
    prod = st.prods[r]
    if prod.t < cfg.msgs[r]:
        if not cfg.closer:
            return put_choices(cfg, st, r, prod, f"put seq {prod.t}")
        if "put_checks_closed_outside_busy" in MUT:
            if prod.closed:
                return [("put(): raises Closed", set_prod(st, r, prod._replace(pc="done")))]
            return [("put(): not closed", set_prod(st, r, prod._replace(pc="enter")))]
        # put() takes the rank's busy flag (a put that finds it held is refused: no change)
        # and checks the closed flag while it holds it
        if prod.busy:
            return []
        if prod.closed:
            return [("put(): raises Closed", set_prod(st, r, prod._replace(pc="done")))]
        return put_choices(cfg, st, r, prod._replace(busy=1), f"put seq {prod.t}: take busy")
    if not cfg.closer:
        st2, n = start_close(cfg, st, r, "main", False)
        if cfg.shm:
            return close_steps(cfg, st2, r, "main")   # its first store is this step
        return [(f"close(): put closed={n + 1}", st2)]
    if prod.busy:
        return []
    if prod.closed:
        return [("close(): already closed", set_prod(st, r, prod._replace(pc="done")))]
    st2, n = start_close(cfg, set_prod(st, r, prod._replace(busy=1)), r, "main", True)
    return [(f"close(): take busy, count {n}", st2)]


def enter_after_check_steps(cfg, st, r):
    """Mutation put_checks_closed_outside_busy: the busy flag is taken after the check."""
    prod = st.prods[r]
    if prod.busy:
        return []
    return [(f"put seq {prod.t}: take busy", start_put(cfg, st, r, prod._replace(busy=1)))]


def closer_steps(cfg, st, r):
    prod = st.prods[r]
    pc = prod.closer[0]
    if pc == "done":
        return []
    if pc != "start":
        return close_steps(cfg, st, r, "closer")
    if "close_no_wait" in MUT:
        if prod.closed:
            return [("closer: close(): already closed", set_prod(st, r, prod._replace(closer=("done", None))))]
        st2, n = start_close(cfg, st, r, "closer", False)
        return [(f"closer: close() (busy ignored), count {n}", st2)]
    if prod.busy:           # close() spins until the put in progress has left
        return []
    if prod.closed:
        return [("closer: close(): already closed", set_prod(st, r, prod._replace(closer=("done", None))))]
    if "close_waits_without_taking_busy" in MUT:
        st2, n = start_close(cfg, st, r, "closer", False)
        return [(f"closer: close(): busy is free (not taken), count {n}", st2)]
    st2, n = start_close(cfg, set_prod(st, r, prod._replace(busy=1)), r, "closer", True)
    return [(f"closer: close(): take busy, count {n}", st2)]


def producer_steps(cfg, st, r):
    prod = st.prods[r]
    out = []
    if prod.closer is not None:
        out += [(lbl if lbl.startswith("closer") else "closer: " + lbl, s) for lbl, s in closer_steps(cfg, st, r)]
    if prod.pc == "idle":
        out += producer_idle_steps(cfg, st, r)
    elif prod.pc == "enter":
        out += enter_after_check_steps(cfg, st, r)
    elif prod.pc != "done":
        out += machine_steps(cfg, st, r, True)
    return out


def loads(cfg, st, r, addr):
    """An owner load of a word of ring r: [(value, state, label prefix)].  It returns the word as it
    is, or the value of a put to it still in flight, which then lands now.  Landings are not steps
    of their own: a landing nobody has read yet cannot be told from one that has not happened, so
    a pending word lands when a load first returns it, and at the latest at the rank's flush.  This
    gives the owner every mixture of old and new words that landings in any order would."""
    out = [(st.mem[r][addr], st, "")]
    for a, v in st.prods[r].pend:
        if a == addr:
            prod = st.prods[r]
            st2 = set_prod(st._replace(mem=store(st.mem, r, a, v)), r, prod._replace(pend=prod.pend - {(a, v)}))
            out.append((v, st2, f"[{word_name(cfg, a)} of the put lands] "))
    return out


def land_all(cfg, st, r):
    """MPI_Win_flush returns once every put of the rank has landed."""
    prod = st.prods[r]
    mem = st.mem
    for a, v in prod.pend:
        mem = store(mem, r, a, v)
    return set_prod(st._replace(mem=mem), r, prod._replace(pend=frozenset()))


def pending_puts(st):
    return any(p.pend for p in st.prods)


def word_name(cfg, addr):
    if addr < 2:
        return ("closed", "closed_check")[addr]
    if addr < cfg.free0:
        j, w = divmod(addr - 2, 4)
        return f"meta[{j}].{('stamp', 'nbytes', 'payload_check', 'header_check')[w]}"
    if addr < cfg.pay0:
        j, w = divmod(addr - cfg.free0, 2)
        return f"free[{j}].{('entry', 'check')[w]}"
    s, w = divmod(addr - cfg.pay0, 2)
    return f"slot {s} word {w}"


# --- owner: ring_select -------------------------------------------------------------------------------
# A pass of ring_select is a sequence of loads.  Between them the thread holds scan = (j, acc, access,
# vals): at the j-th ring of the round robin, acc = (total, reachable, closed_limits_all, lead) of the
# rings before (as ring_select accumulates them), access = the load to do next.  The continuations
# below return lists of (label, owner, scan, decision): a pass branches where ring_select reads the
# clock.
#
# Time is not in the model.  ring_select reads the clock in two places; each is a nondeterministic
# choice wherever the rest of its condition holds, so every timing is covered:
#   - a passed ring with a ready ticket, reached while no ring leads: "nothing new arrived in it for
#     BATCH_GRACE_S" (now - seen_time >= grace), then it leads; or not;
#   - after the scan, with k ready in all, no lead, a patient caller and no arrival since the last
#     pass (arrivals == r.arrivals): "no arrival anywhere for BATCH_GRACE_S", then a copied batch;
#     or not, then SELECT_NONE.
# Time only goes forward: a choice that said "elapsed" stays so (owner.aged[ring], owner.quiet) until
# the instant it is measured from moves (ring_delivered finds the ring's verified changed: seen_time;
# the scan finds the sum of verified changed: arrival_time).  A pass that returns SELECT_NONE which
# only the clock can change leaves the thread in "twait", from where it may select again at any time.
# Every get()/get_batch() of the model blocks (timeout=None: patient); a call that does not wait
# mixes at once, which is one of the patient call's choices.

ACC0 = (0, 0, True, -1)


def ring_at(cfg, owner, j):
    return j % cfg.nrings if "no_round_robin" in MUT else (owner.next_ring + j) % cfg.nrings


def prefix(lbl, outs):
    return [(lbl + l, o, s, d) for l, o, s, d in outs] if lbl else outs


def ring_left(o, real=False):
    """ring_closed_count - delivered: tickets the ring still has to deliver, INF while not closed."""
    if not o.closed:
        return INF
    if "finish_without_count" in MUT and not real:
        return 0
    return o.closed - 1 - o.delivered


def visit(cfg, owner, k, j, acc):
    """ring_count_ready on the j-th ring of the round robin (or the decision after the last)."""
    if j == cfg.nrings:
        return after_scan(cfg, owner, k, acc)
    o = owner.rings[ring_at(cfg, owner, j)]
    if o.verified - o.delivered < k:
        return [("", owner, (j, acc, "stamp", ()), None)]
    return after_count(cfg, owner, k, j, acc)


def after_count(cfg, owner, k, j, acc):
    """ring_closed_count on the j-th ring: a load of its control record until it is known closed."""
    if owner.rings[ring_at(cfg, owner, j)].closed == 0:
        return [("", owner, (j, acc, "closed", ()), None)]
    return judge(cfg, owner, k, j, acc)


def judge(cfg, owner, k, j, acc):
    """ring_select's test of the j-th ring, once its ready and left are known."""
    ring = ring_at(cfg, owner, j)
    o = owner.rings[ring]
    total, reachable, limits_all, lead = acc
    ready, left = min(o.verified - o.delivered, k), ring_left(o)
    if ready and lead < 0 and (ready >= k or ready == left):
        return [("", owner, None, ("ring", ring, min(ready, k)))]
    held = o.delivered - o.returned
    acc = (total + ready, reachable + min(left, cfg.C - held), limits_all and left <= cfg.C - held, lead)
    if not (ready and lead < 0 and owner.passed[ring]):
        return visit(cfg, owner, k, j + 1, acc)
    # the clock: did nothing arrive in this passed ring for BATCH_GRACE_S?
    aged_owner = owner if owner.aged[ring] else owner._replace(aged=tset(owner.aged, ring, True))
    lbl = f"; ring {ring} passed over, nothing new in it for the grace period"
    if "grace_gives_short_batch" in MUT:
        out = [(lbl + ": its own tickets", aged_owner, None, ("ring", ring, ready))]
    elif "passed_never_leads" in MUT:
        out = prefix(lbl, visit(cfg, aged_owner, k, j + 1, acc))
    else:
        out = prefix(lbl + ": it leads", visit(cfg, aged_owner, k, j + 1, acc[:3] + (ring,)))
    if not owner.aged[ring]:
        out += prefix(f"; ring {ring} passed over, grace not elapsed", visit(cfg, owner, k, j + 1, acc))
    return out


def after_scan(cfg, owner, k, acc):
    """ring_select after the last ring: end of stream, wait, refuse, wait for the grace, or mix."""
    total, reachable, limits_all, lead = acc
    # FINDING (rdq/ring.pxi as written tests SELECT_END first: mutation end_before_reachable): ready
    # is counted before the control record is read, so a producer that puts its last messages and
    # closes in between is seen closed with left > 0 and total == 0, and the stream ends without
    # them.  The model tests total < reachable first, as the earlier draft did (for a closed ring
    # reachable counts exactly what it has left, so END then needs every ring delivered).
    if "end_before_reachable" in MUT and total == 0 and limits_all:
        return [("", owner, None, ("end",))]
    if total < k and total < reachable:
        return [("", owner, None, ("none",))]
    if total == 0 and limits_all:
        return [("", owner, None, ("end",))]
    if total < k:
        return [("", owner, None, ("stuck",))]
    if lead < 0:          # patient (every call of the model waits)
        arrivals = sum(o.verified for o in owner.rings)
        if arrivals != owner.arrivals:
            return [(f"; {total} ready, arrivals {owner.arrivals} -> {arrivals}: grace restarts",
                     owner._replace(arrivals=arrivals, quiet=False), None, ("grace",))]
        out = [("; no arrival anywhere for the grace period", owner._replace(quiet=True), None, ("mixed", -1, k))]
        if not owner.quiet:
            out.append(("; grace since the last arrival not elapsed", owner, None, ("grace",)))
        return out
    return [("", owner, None, ("mixed", lead, k))]


SCAN_META_WORD = {"stamp": 0, "nbytes": 1, "pcheck": 2, "hcheck": 3}


def scan_address(cfg, access, t, vals):
    """The word the next load of ring_select reads."""
    if access in SCAN_META_WORD:
        return cfg.meta(t % cfg.C, SCAN_META_WORD[access])
    if access in ("pay0", "pay1"):
        return cfg.pay(vals[1], 0 if access == "pay0" else 1)
    return 0 if access == "closed" else 1


def select_step(cfg, st, tid):
    """One load of ring_select (ring_count_ready / ring_ready / ring_closed_count)."""
    j, _, access, vals = st.threads[tid].scan
    ring = ring_at(cfg, st.owner, j)
    addr = scan_address(cfg, access, st.owner.rings[ring].verified, vals)
    out = []
    for val, st2, lbl in loads(cfg, st, ring, addr):
        out += select_with(cfg, st2, tid, ring, val, lbl)
    return out


def select_with(cfg, st, tid, ring, val, landed):
    """ring_select after its load returned val: [(label, state)]."""
    th = st.threads[tid]
    j, acc, access, vals = th.scan
    owner, k = st.owner, th.k
    if access in ("closed", "ccheck"):
        lbl, outs = control_load(cfg, owner, k, ring, val, th.scan)
    else:
        t = owner.rings[ring].verified
        lbl, outcome = ready_load(cfg, st, ring, t, val, access, vals)
        if outcome == "ready":
            owner = set_ring_owner(owner, ring, verified=t + 1)
            lbl += ": ready"
            outs = visit(cfg, owner, k, j, acc)
        elif outcome == "not ready":
            lbl += ": not ready"
            outs = after_count(cfg, owner, k, j, acc)
        else:
            outs = [("", owner, (j, acc) + outcome, None)]
    return continue_pass(cfg, st, tid, outs, landed + lbl)


def continue_pass(cfg, st, tid, outs, lbl):
    """The pass goes on with its next load, or acts on its decision."""
    res = []
    for l, owner, scan, decision in outs:
        st2 = st._replace(owner=owner)
        if scan is not None:
            res.append((lbl + l, set_thread(st2, tid, st2.threads[tid]._replace(scan=scan))))
        else:
            res += act(cfg, st2, tid, decision, lbl + l)
    return res


def ready_load(cfg, st, ring, t, val, access, vals):
    """ring_ready of ticket t after one load: (label, "ready" / "not ready" / (next access, vals))."""
    jj = t % cfg.C
    if access == "stamp":
        lbl = f"ring {ring} t={t}: load meta[{jj}].stamp={val}"
        if val != t + 1:
            return lbl, "not ready"
        # rma: the implementation loads the stamp again with the other words; it cannot change any more
        return lbl, "ready" if cfg.shm else ("nbytes", (val,))
    if access in ("nbytes", "pcheck"):
        return f"ring {ring} t={t}: load meta[{jj}].{access}={val}", ("pcheck" if access == "nbytes" else "hcheck",
                                                                    vals + (val,))
    if access == "hcheck":
        stamp, nb, pchk = vals
        lbl = f"ring {ring} t={t}: load meta[{jj}].header_check"
        if val != header_hash(stamp, nb, pchk, ring):
            return lbl + " (mismatch)", "not ready"
        if nb > CHECKED_MAX or "no_payload_check" in MUT:
            return lbl, "ready"
        slot = record_slot(cfg, st.mem[ring], t)      # the owner's own record: stable
        return lbl, "not ready" if slot < 0 else ("pay0", (pchk, slot))
    if access == "pay0":
        return f"ring {ring} t={t}: load slot {vals[1]} word 0 (hash)", ("pay1", vals + (val,))
    pchk, slot, w0 = vals
    ok = payload_hash(w0, val) == pchk
    return (f"ring {ring} t={t}: load slot {slot} word 1: payload_check {'matches' if ok else 'mismatch'}",
            "ready" if ok else "not ready")


def control_load(cfg, owner, k, ring, val, scan):
    """ring_closed_count after one load of the control record: (label, continuations)."""
    j, acc, access, vals = scan
    if access == "closed":
        lbl = f"ring {ring}: load closed={val}"
        if val > 0:
            return lbl, [("", owner, (j, acc, "ccheck", (val,)), None)]
        return lbl, judge(cfg, owner, k, j, acc)
    (c,) = vals
    ok = val == record_check(c, "closed")
    if ok:
        owner = set_ring_owner(owner, ring, closed=c)
    lbl = f"ring {ring}: load closed_check: {'valid, count ' + str(c - 1) if ok else 'not valid'}"
    return lbl, judge(cfg, owner, k, j, acc)


def begin_pass(cfg, st, tid, lbl):
    """ring_select starts a pass: [(label, state)]."""
    th = st.threads[tid]._replace(pc="sel", scan=None, dirty=False)
    st = set_thread(st, tid, th)
    return continue_pass(cfg, st, tid, visit(cfg, st.owner, th.k, 0, ACC0), lbl)


def act(cfg, st, tid, decision, lbl):
    """ring_select decided: deliver, copy, end of stream, refuse, or wait: [(label, state)]."""
    th = st.threads[tid]
    kind = decision[0]
    if kind == "none":
        if th.dirty or pending_puts(st):     # (a put in flight may land: see loads)
            return begin_pass(cfg, st, tid, lbl + "; nothing yet, but something changed: select again")
        return [(lbl + "; nothing to deliver: wait", set_thread(st, tid, th._replace(pc="wait", scan=None)))]
    if kind == "grace":
        return [(lbl + ": wait for the grace period", set_thread(st, tid, th._replace(pc="twait", scan=None)))]
    if kind == "end":
        return [(lbl + "; END OF STREAM", end_of_stream(cfg, st, tid))]
    if kind == "stuck":
        return [(lbl + "; stuck on held views: refused", leave_call(cfg, st, tid))]
    if kind == "mixed":
        rows = mixed_rows(cfg, st.owner, decision[1], decision[2])
        rings = tuple(dict.fromkeys(ring for ring, _ in rows))
        if cfg.fairness and cfg.batching:
            st = st._replace(owner=batch_fairness(cfg, st.owner, th.k, rings))
        lead = f"from lead ring {decision[1]}" if decision[1] >= 0 else "from the round robin's place"
        return [(lbl + f"; copy {rows} across rings ({lead})", start_copy(cfg, st, tid, rows, rings))]
    ring, count = decision[1], decision[2]
    check_short_batch(cfg, st, ring, count, th.k)
    if cfg.fairness and cfg.batching:
        st = st._replace(owner=batch_fairness(cfg, st.owner, th.k, (ring,)))
    d = st.owner.rings[ring].delivered
    tickets = tuple(range(d, d + count))
    slots = [record_slot(cfg, st.mem[ring], t) for t in tickets]
    if slots == list(range(slots[0], slots[0] + count)):
        if "get_leaves_busy_early" in MUT:
            st = leave_busy(cfg, st)
            return [(lbl + f"; leave busy, then deliver ring {ring} {tickets}", set_thread(
                st, tid, st.threads[tid]._replace(pc="deliver", scan=None, rows=(ring, tickets))))]
        return [(lbl + f"; deliver ring {ring} tickets {tickets} (slots {slots})",
                 leave_call(cfg, deliver_view(cfg, st, tid, ring, tickets), tid))]
    # _ring_batch: ring_delivered, then the copy
    st = st._replace(owner=ring_delivered(cfg, st.owner, ring))
    rows = tuple((ring, t) for t in tickets)
    return [(lbl + f"; ring {ring} slots {slots} not consecutive: copy", start_copy(cfg, st, tid, rows, None))]


def mixed_rows(cfg, owner, lead, count):
    """_mixed_batch: count ready tickets, ring after ring from lead (or the round robin's place)."""
    start = lead if lead >= 0 and "mixed_ignores_lead" not in MUT else ring_at(cfg, owner, 0)
    rows, need = [], count
    for j in range(cfg.nrings):
        ring = (start + j) % cfg.nrings
        o = owner.rings[ring]
        take = min(o.verified - o.delivered, need)
        rows += [(ring, o.delivered + i) for i in range(take)]
        need -= take
        if need == 0:
            break
    assert need == 0, "mixed batch without k ready tickets"
    return tuple(rows)


def ring_delivered(cfg, owner, ring):
    """ring_delivered: the round robin moves past ring; every other ring with a verified ticket
    waiting is passed; seen (and seen_time: the aged flag) follow verified."""
    owner = owner._replace(next_ring=(ring + 1) % cfg.nrings)
    if not cfg.batching:      # passed and seen_time matter only to get_batch(k > 1)
        return owner
    rings = owner.rings
    return owner._replace(passed=tuple(j != ring and o.verified > o.delivered for j, o in enumerate(rings)),
                          seen=tuple(o.verified for o in rings),
                          aged=tuple(a and o.verified == s for a, o, s in zip(owner.aged, rings, owner.seen)))


def check_short_batch(cfg, st, ring, count, k):
    """A batch of fewer than k is the rest of a closing producer's messages (observable)."""
    if count < k:
        prod, got = st.prods[ring], st.owner.got[ring]
        closing = prod.closed or CLOSING & {prod.pc, prod.closer and prod.closer[0]}
        if not closing or got + count != prod.t:
            raise Violation(f"SHORT BATCH: get_batch({k}) takes {count} of ring {ring} from ticket {got}; its "
                            f"producer sent {prod.t} and {'is closing' if closing else 'did not close'}")


CLOSING = {"c_check", "c_closed", "c_flush"}


def batch_fairness(cfg, owner, k, served):
    """Ghost (cfg.fairness with get_batch): the grace rule, at a delivery from the rings served.

    A ring is *due* when it was passed over with a ticket waiting and nothing new arrived in it for
    the grace period (passed, aged, verified > delivered).
      1. The first due ring of the round robin is served, unless a ring before it leads by itself
         (k ready, or its closed producer's remainder): that one is served first.
      2. So a due ring waits through at most nrings - 1 deliveries of other rings: each of them moves
         the round robin's place closer to it (while it stays due)."""
    n = cfg.nrings
    for j in range(n):
        r = (owner.next_ring + j) % n
        o = owner.rings[r]
        ready = min(o.verified - o.delivered, k)
        if ready and (ready >= k or ready == ring_left(o, real=True)):
            break
        if ready and owner.passed[r] and owner.aged[r]:
            if r not in served:
                raise Violation(f"PASSED OVER: ring {r} was passed over with a ticket waiting and nothing new "
                                f"arrived in it for the grace period, no ring before it leads by itself, and "
                                f"get_batch({k}) takes from ring(s) {list(served)} instead")
            break
    waits = list(owner.waits)
    for r, o in enumerate(owner.rings):
        if r in served or not (owner.passed[r] and owner.aged[r] and o.verified > o.delivered):
            waits[r] = 0
        else:
            waits[r] += 1
            if waits[r] > n - 1:
                raise Violation(f"UNFAIR BATCH: ring {r} is due (passed over, a ticket waiting, nothing new for "
                                f"the grace period) and waited through {waits[r]} deliveries of other rings")
    return owner._replace(waits=tuple(waits))


def check_delivery(cfg, st, ring, t, owner):
    """The message of ticket t as the user gets it: (slot, nbytes); raises if torn, stale or out of order."""
    words = st.mem[ring]
    slot = record_slot(cfg, words, t)
    if slot < 0:
        raise Violation(f"DELIVERY WITHOUT SLOT: ring {ring} ticket {t}: the free record does not name a slot")
    stamp, nb = words[cfg.meta(t % cfg.C, 0)], words[cfg.meta(t % cfg.C, 1)]
    if stamp != t + 1:
        raise Violation(f"STALE META: ring {ring} ticket {t} delivered with stamp {stamp}")
    want = message_word(ring, t, nb)
    got = (words[cfg.pay(slot, 0)], words[cfg.pay(slot, 1)])
    if got != (want, want):
        raise Violation(f"TORN OR STALE MESSAGE: ring {ring} ticket {t} (nbytes {nb}) delivered from slot {slot} "
                        f"holding {got}")
    if owner.got[ring] != t:
        raise Violation(f"ORDER / DUPLICATE / LOSS: ring {ring} delivers ticket {t}, the user had {owner.got[ring]} "
                        f"before it")
    return slot, nb


def count_wait(cfg, st, owner, ring):
    """Fairness ghost (get() only): ring delivers; every other ring with a sent, undelivered message
    waited once more."""
    waits = list(owner.waits)
    for r in range(cfg.nrings):
        if r == ring or st.prods[r].t <= owner.rings[r].delivered:
            waits[r] = 0
        else:
            waits[r] += 1
            if waits[r] > cfg.nrings - 1:
                raise Violation(f"UNFAIR: ring {r} has a sent message and waited through {waits[r]} deliveries "
                                f"of other rings")
    return owner._replace(waits=tuple(waits))


def deliver_view(cfg, st, tid, ring, tickets):
    """get() / a zero-copy batch: the tickets become a held view; ring_delivered."""
    owner = st.owner
    if cfg.fairness and not cfg.batching:
        owner = count_wait(cfg, st, owner, ring)
    rows = []
    for t in tickets:
        slot, nb = check_delivery(cfg, st, ring, t, owner)
        rows.append((slot, t, nb))
        owner = owner._replace(got=tset(owner.got, ring, t + 1))
    o = owner.rings[ring]
    owner = set_ring_owner(owner, ring, delivered=max(o.delivered, tickets[-1] + 1))
    owner = ring_delivered(cfg, owner._replace(held=tuple(sorted(owner.held + ((ring, tuple(rows)),)))), ring)
    return st._replace(owner=owner)


def deliver_step(cfg, st, tid):
    """Mutation get_leaves_busy_early: the delivery after the busy section."""
    ring, tickets = st.threads[tid].rows
    st = deliver_view(cfg, st, tid, ring, tickets)    # busy was left already: do not clear it again
    return [(f"deliver ring {ring} tickets {tickets}", set_thread(st, tid, TH_IDLE))]


def start_copy(cfg, st, tid, rows, fin):
    """fin: the rings a mixed batch takes from (ring_delivered once all rows are copied), or None."""
    return set_thread(st, tid, st.threads[tid]._replace(pc="copy", scan=None, rows=rows, fin=fin))


def copy_row_step(cfg, st, tid):
    """Copy one row (both payload words, stable once verified), then return its slot."""
    th = st.threads[tid]
    (ring, t), rest = th.rows[0], th.rows[1:]
    owner = st.owner
    if owner.rings[ring].delivered != t:
        raise AssertionError("copied rows out of order")
    slot, nb = check_delivery(cfg, st, ring, t, owner)
    owner = owner._replace(got=tset(owner.got, ring, t + 1))
    owner = set_ring_owner(owner, ring, delivered=t + 1)
    th = th._replace(pc="ret", rows=rest, ret=(((ring, slot),), "check" if "no_return_lock" in MUT else "lock",
                                               None, "copy"))
    return [(f"copy ring {ring} ticket {t} from slot {slot}", set_thread(st._replace(owner=owner), tid, th))]


def finish_mixed(cfg, owner, rings):
    """_mixed_batch after the copy: ring_delivered(last ring); no ring that gave rows is passed."""
    owner = ring_delivered(cfg, owner, rings[-1])
    if cfg.batching:
        owner = owner._replace(passed=tuple(p and j not in rings for j, p in enumerate(owner.passed)))
    return owner


def leave_busy(cfg, st):
    return st._replace(owner=st.owner._replace(busy=0)) if cfg.consumers == 2 else st


def leave_call(cfg, st, tid):
    st = leave_busy(cfg, st)
    return set_thread(st, tid, TH_IDLE)


def end_of_stream(cfg, st, tid):
    for r in range(cfg.nrings):
        sent, got = st.prods[r].t, st.owner.got[r]
        if sent != got:
            raise Violation(f"END OF STREAM BEFORE ALL DELIVERED: ring {r}: put returned True {sent} times, "
                            f"{got} delivered")
    st = st._replace(owner=st.owner._replace(eos=True))
    return leave_call(cfg, st, tid)


def wait_select_steps(cfg, st, tid):
    """The owner waits in ring_wait_select: a pass again once a word it read changed (wait), or at any
    time when it waits for the grace period (twait: only the clock changes the answer)."""
    th = st.threads[tid]
    if th.pc == "twait":
        return begin_pass(cfg, st, tid, "time passes: select again")
    if not (th.dirty or pending_puts(st)):
        return []
    return begin_pass(cfg, st, tid, "wake: select again")


# --- owner: releases ---------------------------------------------------------------------------------

def take_view_steps(cfg, st, tid, cont):
    """The user releases a held view (any one, any order): its slots go back one by one."""
    out = []
    for view in sorted(set(st.owner.held)):
        ring, rows = view
        held = list(st.owner.held)
        held.remove(view)
        owner = st.owner._replace(held=tuple(held))
        todo = tuple((ring, slot) for slot, _, _ in rows)
        if "no_return_lock" in MUT:
            phase = "check"
        elif owner.lock is None:       # the lock's CAS is this step when it is free
            phase, owner = "check", owner._replace(lock=tid)
        else:
            phase = "lock"
        th = st.threads[tid]._replace(pc="ret", ret=(todo, phase, None, cont))
        out.append((f"release ring {ring} tickets {[t for _, t, _ in rows]}",
                    set_thread(st._replace(owner=owner), tid, th)))
    return out


def return_steps(cfg, st, tid):
    """ring_return: under the return lock, entry_check then entry of the record of ticket returned + C."""
    th = st.threads[tid]
    todo, phase, n0, cont = th.ret
    owner = st.owner
    ring, slot = todo[0]
    if phase == "lock":
        if owner.lock is not None:
            return []
        return [("take return lock", set_thread(st._replace(owner=owner._replace(lock=tid)), tid,
                                                th._replace(ret=(todo, "check", None, cont))))]
    C = cfg.C
    if phase == "check":
        n = owner.rings[ring].returned
        entry = free_entry(cfg, n + C, slot)
        mem = store(st.mem, ring, cfg.free(n % C, 1), record_check(entry, n % C))
        return [(f"ring {ring}: store free[{n % C}].check for ticket {n + C} slot {slot}",
                 set_thread(st._replace(mem=mem), tid, th._replace(ret=(todo, "entry", n, cont))))]
    entry = free_entry(cfg, n0 + C, slot)
    mem = store(st.mem, ring, cfg.free(n0 % C, 0), entry)
    owner = set_ring_owner(owner, ring, returned=n0 + 1)
    owner = owner._replace(assign=tset(owner.assign, ring, tset(owner.assign[ring], n0 % C, (n0 + C, slot))))
    if owner.lock == tid:
        owner = owner._replace(lock=None)
    lbl = f"ring {ring}: store free[{n0 % C}].entry, returned={n0 + 1}"
    st = st._replace(mem=mem, owner=owner)
    if todo[1:]:
        phase = "check" if "no_return_lock" in MUT else "lock"
        return [(lbl, set_thread(st, tid, th._replace(ret=(todo[1:], phase, None, cont))))]
    if cont == "copy":
        if th.rows:
            return [(lbl, set_thread(st, tid, th._replace(pc="copy", ret=None)))]
        if th.fin:
            st = st._replace(owner=finish_mixed(cfg, st.owner, th.fin))
        return [(lbl + "; copied batch returned", leave_call(cfg, st, tid))]
    return [(lbl, set_thread(st, tid, th._replace(pc="idle", ret=None)))]


# --- owner threads --------------------------------------------------------------------------------------

def own_ring_open(cfg, st):
    return cfg.own is not None and not st.prods[cfg.own].closed


def consumer_idle_steps(cfg, st, tid):
    out = take_view_steps(cfg, st, tid, "idle")
    owner = st.owner
    if not owner.eos and len(owner.held) < cfg.hold and (cfg.consumers == 1 or owner.busy == 0):
        # An owner that also produces must not block in get() on its own open ring (a user-level
        # self-deadlock): it gets after its own put found the ring full, or once it closed it.
        own_open = own_ring_open(cfg, st)
        if cfg.get_single and (not own_open or owner.own_full):
            out += enter_call(cfg, st, tid, 1)
        if not own_open:
            # get_batch(k) refuses at once (no change) when k > P x C - the messages held in views
            outstanding = sum(len(rows) for _, rows in owner.held)
            for k in cfg.batch:
                if k <= cfg.nrings * cfg.C - outstanding:
                    out += enter_call(cfg, st, tid, k)
    if tid == 0 and cfg.own is not None:
        out += own_idle_steps(cfg, st)
    return out


def enter_call(cfg, st, tid, k):
    owner = st.owner._replace(own_full=False, busy=1 if cfg.consumers == 2 else 0)
    st = set_thread(st._replace(owner=owner), tid, st.threads[tid]._replace(k=k))
    return begin_pass(cfg, st, tid, "get()" if k == 1 else f"get_batch({k})")


def own_idle_steps(cfg, st):
    """The owner's own non-blocking put, or its close(), on its own ring."""
    r = cfg.own
    prod = st.prods[r]
    if prod.pc == "done":
        return []
    st = set_thread(st, 0, st.threads[0]._replace(pc="own"))
    if prod.t < cfg.owner_msgs:
        if st.owner.own_full:
            return []
        return put_choices(cfg, st, r, prod, f"own put seq {prod.t} (block=False)")
    st2, n = start_close(cfg, st, r, "main", False)
    if cfg.shm:
        return [("own close(): " + lbl, s) for lbl, s in close_steps(cfg, st2, r, "main")]
    return [(f"own close(): put closed={n + 1}", st2)]


def finish_own(st):
    """The owner thread's own put or close returned."""
    th = st.threads[0]
    if th.pc == "own":
        st = set_thread(st, 0, th._replace(pc="idle"))
    return st


def thread_steps(cfg, st, tid):
    pc = st.threads[tid].pc
    if pc == "idle":
        if tid == cfg.releaser_tid:
            return take_view_steps(cfg, st, tid, "idle")
        return consumer_idle_steps(cfg, st, tid)
    if pc == "sel":
        return select_step(cfg, st, tid)
    if pc in ("wait", "twait"):
        return wait_select_steps(cfg, st, tid)
    if pc == "copy":
        return copy_row_step(cfg, st, tid)
    if pc == "ret":
        return return_steps(cfg, st, tid)
    if pc == "deliver":
        return deliver_step(cfg, st, tid)
    if pc == "own":
        return machine_steps(cfg, st, cfg.own, False)
    raise AssertionError(pc)


def thread_name(cfg, tid):
    if tid == cfg.releaser_tid:
        return "releaser"
    return "owner" if tid == 0 else "owner thread 2"


# --- successors, wake-ups ------------------------------------------------------------------------------

def successors(cfg, st):
    out = []
    for r in range(cfg.P):
        out += [(f"P{r}: {lbl}", "P", r, s) for lbl, s in producer_steps(cfg, st, r)]
    for tid in range(cfg.nthreads):
        out += [(f"{thread_name(cfg, tid)}: {lbl}", "T", tid, s) for lbl, s in thread_steps(cfg, st, tid)]
    return [(lbl, wake(cfg, st, s, kind, who)) for lbl, kind, who, s in out]


def wake(cfg, old, new, kind, who):
    """Mark waiting loops whose words changed (and extend the values an rma get may return)."""
    mem_changed = new.mem is not old.mem and new.mem != old.mem
    returned_changed = kind == "T" and new.owner.rings is not old.owner.rings and any(
        a.returned != b.returned for a, b in zip(old.owner.rings, new.owner.rings))
    if mem_changed or returned_changed:
        threads = new.threads
        for tid, th in enumerate(threads):
            if th.pc in ("sel", "wait") and not th.dirty and not (kind == "T" and who == tid):
                threads = tset(threads, tid, th._replace(dirty=True))
        if threads is not new.threads:
            new = new._replace(threads=threads)
    if mem_changed and kind == "T":         # only owner threads write free lists
        for r in range(cfg.nrings):
            if new.mem[r] is not old.mem[r] and new.mem[r][cfg.free0:cfg.pay0] != old.mem[r][cfg.free0:cfg.pay0]:
                new = wake_producer(cfg, new, r)
    return new


def wake_producer(cfg, st, r):
    prod = st.prods[r]
    if prod.pc in ("rd", "wait") and not prod.dirty:
        return set_prod(st, r, prod._replace(dirty=True))
    if prod.pc == "get":
        first, n, seen = prod.buf
        words = st.mem[r]
        seen2 = tuple(vals if words[a] in vals else vals + (words[a],)
                      for a, vals in zip(refresh_words(cfg, first, n), seen))
        return set_prod(st, r, prod._replace(buf=(first, n, seen2), dirty=True))
    return st


# --- invariants ----------------------------------------------------------------------------------------

def holds(cfg, st, r, addr, want):
    """The word holds want, and no put in flight will change it."""
    if st.mem[r][addr] != want:
        return False
    return all(v == want for a, v in st.prods[r].pend if a == addr)


def check_state(cfg, st):
    for r in range(cfg.nrings):
        check_verified(cfg, st, r)
    for ring, rows in st.owner.held:
        for slot, t, nb in rows:
            want = message_word(ring, t, nb)
            if not (holds(cfg, st, ring, cfg.pay(slot, 0), want) and holds(cfg, st, ring, cfg.pay(slot, 1), want)):
                words = st.mem[ring]
                raise Violation(f"PINNED SLOT OVERWRITTEN: ring {ring} slot {slot} held for ticket {t} holds "
                                f"{(words[cfg.pay(slot, 0)], words[cfg.pay(slot, 1)])}, puts in flight to it: "
                                f"{sorted(st.prods[ring].pend)}")
    if not cfg.observable_only:
        for r in range(cfg.nrings):
            check_credit(cfg, st, r)
            check_free_list(cfg, st, r)


def check_verified(cfg, st, r):
    """A ticket the owner found complete stays complete until it is delivered."""
    o = st.owner.rings[r]
    words = st.mem[r]
    for t in range(o.delivered, o.verified):
        slot = record_slot(cfg, words, t)
        nb = words[cfg.meta(t % cfg.C, 1)]
        want = message_word(r, t, nb)
        if slot < 0 or not (holds(cfg, st, r, cfg.pay(slot, 0), want) and holds(cfg, st, r, cfg.pay(slot, 1), want)
                            and holds(cfg, st, r, cfg.meta(t % cfg.C, 0), t + 1)
                            and holds(cfg, st, r, cfg.meta(t % cfg.C, 1), nb)):
            raise Violation(f"VERIFIED MESSAGE CHANGED: ring {r} ticket {t} was found complete, now its slot "
                            f"{slot} / meta no longer hold it")


def check_credit(cfg, st, r):
    """Ghost: the producer uses and caches only slots the owner handed to those very tickets."""
    prod, o = st.prods[r], st.owner.rings[r]
    assign = st.owner.assign[r]
    writing = prod.pc in WRITING
    if writing and prod.t - o.returned >= cfg.C:
        raise Violation(f"MEMORY BOUND: ring {r} writes ticket {prod.t} with only {o.returned} released "
                        f"(more than C={cfg.C} in flight)")
    # tickets below returned are done with (a put may return after its ticket was consumed)
    for u in range(max(prod.t, o.returned), max(prod.credit, prod.t + 1 if writing else 0)):
        if assign[u % cfg.C] != (u, prod.slots[u % cfg.C]):
            raise Violation(f"{'NO CREDIT' if writing and u == prod.t else 'STALE CREDIT'}: ring {r} ticket {u} "
                            f"uses slot {prod.slots[u % cfg.C]}, the owner's record {u % cfg.C} was last handed "
                            f"out as (ticket, slot) {assign[u % cfg.C]}")


def check_free_list(cfg, st, r):
    """Ghost: the records of the undelivered tickets, the held views and the slots being released
    name every slot of the ring exactly once."""
    o, assign, words = st.owner.rings[r], st.owner.assign[r], st.mem[r]
    slots = []
    for u in range(o.delivered, o.returned + cfg.C):
        s = record_slot(cfg, words, u)
        if assign[u % cfg.C][0] != u or s != assign[u % cfg.C][1]:
            raise Violation(f"FREE LIST CORRUPT: ring {r} record {u % cfg.C} should hand slot "
                            f"{assign[u % cfg.C][1]} to ticket {u}, it reads {s}")
        slots.append(s)
    slots += [s for ring, rows in st.owner.held if ring == r for s, _, _ in rows]
    slots += [s for th in st.threads if th.ret for ring, s in th.ret[0] if ring == r]
    if sorted(slots) != list(range(cfg.C)):
        raise Violation(f"FREE LIST CORRUPT: ring {r}: free records for tickets {o.delivered}.."
                        f"{o.returned + cfg.C - 1}, held views and releases name slots {sorted(slots)}")


def is_final(cfg, st):
    owner = st.owner
    if not owner.eos or owner.held or owner.lock is not None:
        return False
    if any(th.pc != "idle" for th in st.threads):
        return False
    return all(p.pc == "done" and not p.pend and not p.stage and (p.closer is None or p.closer[0] == "done")
               for p in st.prods)


def describe(cfg, st):
    lines = []
    for r in range(cfg.nrings):
        p, o = st.prods[r], st.owner.rings[r]
        lines.append(f"ring {r}: producer pc={p.pc} sent={p.t} credit_upto={p.credit} pending={sorted(p.pend)} "
                     f"closed={p.closed} busy={p.busy} closer={p.closer}; owner delivered={o.delivered} "
                     f"verified={o.verified} returned={o.returned} closed_count={o.closed - 1 if o.closed else None}")
        lines.append(f"   words: {st.mem[r]}")
    o = st.owner
    lines.append(f"owner: held={o.held} lock={o.lock} busy={o.busy} eos={o.eos} next_ring={o.next_ring} "
                 f"passed={o.passed} seen={o.seen} aged={o.aged} arrivals={o.arrivals} quiet={o.quiet} "
                 f"waits={o.waits}")
    for tid, th in enumerate(st.threads):
        lines.append(f"{thread_name(cfg, tid)}: pc={th.pc} k={th.k} dirty={th.dirty} ret={th.ret} fin={th.fin}")
    return "\n".join(lines)


# --- search ----------------------------------------------------------------------------------------------

def explore(cfg, max_states=5_000_000):
    """Breadth-first search; returns a dict with states, transitions, seconds, verdict, trace."""
    s0 = initial(cfg)
    parent = {s0: None}
    queue = deque([s0])
    transitions = finals = 0
    bad = verdict = None
    t0 = time.time()
    while queue:
        st = queue.popleft()
        try:
            check_state(cfg, st)
            succ = successors(cfg, st)
        except Violation as v:
            bad, verdict = st, "VIOLATION: " + str(v)
            break
        final = is_final(cfg, st)
        finals += final
        if not succ and not final:
            bad, verdict = st, "DEADLOCK"
            break
        for lbl, s2 in succ:
            transitions += 1
            if s2 not in parent:
                parent[s2] = (st, lbl)
                queue.append(s2)
        if len(parent) > max_states:
            verdict = f"INCOMPLETE: state limit {max_states:,} reached"
            break
    res = dict(states=len(parent), transitions=transitions, finals=finals, seconds=time.time() - t0,
               verdict=verdict or "OK", ok=verdict is None, trace=None, state=None)
    if bad is not None:
        res["trace"] = trace_to(parent, bad)
        res["state"] = describe(cfg, bad)
    return res


def trace_to(parent, st):
    labels = []
    while parent[st] is not None:
        st, lbl = parent[st]
        labels.append(lbl)
    return labels[::-1]


# --- configurations -----------------------------------------------------------------------------------------

# Small bounds that together exercise every path: shm and rma (checked, large and mixed sizes),
# get and get_batch (zero-copy, copied from one ring, copied across rings from a lead ring or after
# the grace, short for a closed producer's remainder, k > C, refused while held views block it,
# the grace rule's fairness), puts that time out, the owner's own puts (finding its ring
# full), a releaser thread, a closer thread, two consumer threads.  tests/test_model.py runs these.
QUICK = {
    "shm-P2-M2-C1": dict(transport="shm", P=2, M=2, C=1),
    "shm-P3-M1-C1-fair": dict(transport="shm", P=3, M=1, C=1, fairness=True),
    "shm-P1-M3-C2-batch2": dict(transport="shm", P=1, M=3, C=2, batch=(2,)),
    "shm-P2-M2-C2-batch2-only-fair": dict(transport="shm", P=2, M=2, C=2, batch=(2,), get_single=False,
                                          fairness=True),
    "shm-P2-M2-C1-batch2-only": dict(transport="shm", P=2, M=2, C=1, batch=(2,), get_single=False),
    "shm-P2-M1+3-C3-batch2-only-hold1-fair": dict(transport="shm", P=2, M=(1, 3), C=3, batch=(2,),
                                                  get_single=False, hold=1, fairness=True),
    "shm-P1-M3-C1-timeouts": dict(transport="shm", P=1, M=3, C=1, ptimeouts=1),
    "shm-P1-M2-C1-ownput2": dict(transport="shm", P=1, M=2, C=1, owner_msgs=2),
    "shm-P1-M3-C2-releaser": dict(transport="shm", P=1, M=3, C=2, releaser=True),
    "shm-P2-M1-C2-releaser-batch2-hold1": dict(transport="shm", P=2, M=1, C=2, batch=(2,), releaser=True, hold=1),
    "shm-P1-M3-C2-closer": dict(transport="shm", P=1, M=3, C=2, closer=True),
    "shm-P2-M1-C1-closer": dict(transport="shm", P=2, M=1, C=1, closer=True),
    "shm-P1-M2-C2-2consumers-batch2": dict(transport="shm", P=1, M=2, C=2, batch=(2,), consumers=2),
    "shm-P2-M1-C2-2consumers-batch2": dict(transport="shm", P=2, M=1, C=2, batch=(2,), consumers=2),
    "rma-checked-P1-M3-C2": dict(transport="rma", P=1, M=3, C=2, sizes=(1,)),
    "rma-large-P1-M3-C1": dict(transport="rma", P=1, M=3, C=1, sizes=(2,)),
    "rma-mixed-P1-M3-C2-batch2": dict(transport="rma", P=1, M=3, C=2, sizes=(1, 2), batch=(2,)),
    "rma-mixed-P2-M1-C1-fair": dict(transport="rma", P=2, M=1, C=1, sizes=(1, 2), fairness=True),
    "rma-checked-P2-M1-C2-batch2-only": dict(transport="rma", P=2, M=1, C=2, batch=(2,), get_single=False),
    "rma-mixed-P1-M3-C1-timeouts": dict(transport="rma", P=1, M=3, C=1, sizes=(1, 2), ptimeouts=1),
    "rma-mixed-P1-M2-C1-ownput2": dict(transport="rma", P=1, M=2, C=1, sizes=(1, 2), owner_msgs=2),
    "rma-checked-P1-M2-C2-releaser": dict(transport="rma", P=1, M=2, C=2, releaser=True),
    "rma-mixed-P1-M3-C2-releaser-batch2": dict(transport="rma", P=1, M=3, C=2, sizes=(1, 2), batch=(2,), releaser=True),
    "rma-mixed-P1-M2-C1-closer": dict(transport="rma", P=1, M=2, C=1, sizes=(1, 2), closer=True),
    "rma-checked-P1-M2-C2-2consumers-batch2": dict(transport="rma", P=1, M=2, C=2, batch=(2,), consumers=2),
    "rma-more-mixed-P1-M4-C2-batch2-only": dict(transport="rma", P=1, M=4, C=2, sizes=(1, 1, 2), batch=(2,),
                                                get_single=False, more=True),
    "rma-more-P1-M3-C2-closer": dict(transport="rma", P=1, M=3, C=2, closer=True, more=True),
    "rma-more-P1-M3-C3-stage3-timeouts": dict(transport="rma", P=1, M=3, C=3, stage_max=3, ptimeouts=1, more=True),
    "rma-more-P1-M2-C1-ownput2": dict(transport="rma", P=1, M=2, C=1, owner_msgs=2, more=True, stage_max=1),
}

# Larger bounds: minutes rather than seconds.
MORE = {
    "shm-P2-M3-C2": dict(transport="shm", P=2, M=3, C=2),
    "shm-P2-M2-C2-batch2": dict(transport="shm", P=2, M=2, C=2, batch=(2,)),
    "shm-P2-M2-C3-batch2-hold2": dict(transport="shm", P=2, M=2, C=3, batch=(2,), hold=2),
    "shm-P3-M1-C2-batch2": dict(transport="shm", P=3, M=1, C=2, batch=(2,)),
    "shm-P2-M1+4-C4-batch2-only-fair": dict(transport="shm", P=2, M=(1, 4), C=4, batch=(2,), get_single=False,
                                            fairness=True),
    "shm-P3-M1-C2-batch2-only-fair": dict(transport="shm", P=3, M=1, C=2, batch=(2,), get_single=False, fairness=True),
    "shm-P3-M1-C1-batch2-fair": dict(transport="shm", P=3, M=1, C=1, batch=(2,), fairness=True),
    "shm-P2-M2-C1-batch2": dict(transport="shm", P=2, M=2, C=1, batch=(2,)),
    "shm-P2-M2+3-C2-batch2-fair": dict(transport="shm", P=2, M=(2, 3), C=2, batch=(2,), fairness=True),
    "shm-P2-M2-C1-timeouts": dict(transport="shm", P=2, M=2, C=1, ptimeouts=1),
    "shm-P1-M3-C2-ownput3": dict(transport="shm", P=1, M=3, C=2, owner_msgs=3),
    "shm-P2-M2-C1-releaser": dict(transport="shm", P=2, M=2, C=1, releaser=True),
    "shm-P2-M2-C2-releaser-batch2-hold1": dict(transport="shm", P=2, M=2, C=2, batch=(2,), releaser=True, hold=1),
    "shm-P2-M2-C1-closer": dict(transport="shm", P=2, M=2, C=1, closer=True),
    "rma-mixed-P2-M2-C1": dict(transport="rma", P=2, M=2, C=1, sizes=(1, 2)),
    "rma-checked-P2-M2-C2": dict(transport="rma", P=2, M=2, C=2, sizes=(1,)),
    "rma-checked-P3-M1-C1": dict(transport="rma", P=3, M=1, C=1, sizes=(1,)),
    "rma-large-P2-M2-C2-batch2": dict(transport="rma", P=2, M=2, C=2, sizes=(2,), batch=(2,)),
    "rma-checked-P2-M1+3-C2-batch2-only-fair": dict(transport="rma", P=2, M=(1, 3), C=2, batch=(2,),
                                                    get_single=False, fairness=True),
    "rma-mixed-P2-M2-C1-timeouts": dict(transport="rma", P=2, M=2, C=1, sizes=(1, 2), ptimeouts=1),
    "rma-mixed-P1-M3-C2-ownput3": dict(transport="rma", P=1, M=3, C=2, sizes=(1, 2), owner_msgs=3),
    "rma-mixed-P2-M2-C1-releaser": dict(transport="rma", P=2, M=2, C=1, sizes=(1, 2), releaser=True),
    "rma-mixed-P1-M4-C2-closer": dict(transport="rma", P=1, M=4, C=2, sizes=(1, 2), closer=True),
    "rma-mixed-P2-M1-C2-2consumers-batch2": dict(transport="rma", P=2, M=1, C=2, sizes=(1, 2), batch=(2,), consumers=2),
    "rma-more-P2-M2+1-C2": dict(transport="rma", P=2, M=(2, 1), C=2, more=True),
    "rma-more-P2-M2-C2": dict(transport="rma", P=2, M=2, C=2, more=True),
}

CONFIGS = {**QUICK, **MORE}

# MPI_Get torn bit by bit (which the protocol does not rule out): a free-list record read while
# the owner rewrites it must fail its check.  It passed entry_check == ~entry in the first draft
# of the protocol with a slot that was neither the old nor the new one (mutation complement_check).
FINDINGS = {
    "rma-torn-free-list-P1-M4-C3": dict(transport="rma", P=1, M=4, C=3, torn_reads=True),
}

# the configuration in which each seeded bug is shown
MUTATION_CONFIGS = {
    "no_payload_check": dict(transport="rma", P=1, M=2, C=1, sizes=(1,)),
    "no_middle_flush": dict(transport="rma", P=1, M=2, C=1, sizes=(2,)),
    "entry_without_lap": dict(transport="shm", P=1, M=2, C=1),
    "no_return_lock": dict(transport="shm", P=1, M=2, C=2, releaser=True),
    "close_no_wait": dict(transport="shm", P=1, M=2, C=1, closer=True),
    "close_waits_without_taking_busy": dict(transport="shm", P=1, M=2, C=1, closer=True),
    "finish_without_count": dict(transport="shm", P=1, M=2, C=1),
    "no_credit_wait": dict(transport="shm", P=1, M=3, C=1),
    "put_checks_closed_outside_busy": dict(transport="shm", P=1, M=2, C=1, closer=True),
    "get_leaves_busy_early": dict(transport="shm", P=1, M=2, C=2, consumers=2),
    "shm_stamp_first": dict(transport="shm", P=1, M=1, C=1),
    "no_round_robin": dict(transport="shm", P=2, M=2, C=1, fairness=True),
    "complement_check": dict(transport="rma", P=1, M=4, C=3, torn_reads=True),
    "end_before_reachable": dict(transport="shm", P=1, M=1, C=1),
    "passed_never_leads": dict(transport="shm", P=2, M=(1, 4), C=4, batch=(2,), get_single=False, fairness=True),
    "grace_gives_short_batch": dict(transport="shm", P=2, M=(1, 2), C=2, batch=(2,), get_single=False),
    "wait_with_stage": dict(transport="rma", P=1, M=3, C=2, batch=(2,), get_single=False, more=True),
    "close_drops_stage": dict(transport="rma", P=1, M=2, C=2, more=True),
}


def run(name, kw, mutation=None, observable_only=False, max_states=5_000_000, show_trace=True, out=sys.stdout):
    MUT.clear()
    if mutation:
        MUT.add(mutation)
    try:
        cfg = Cfg(**kw, observable_only=observable_only)
        res = explore(cfg, max_states)
    finally:
        MUT.clear()
    print(f"{name:42s} states={res['states']:>9,} transitions={res['transitions']:>10,} "
          f"{res['seconds']:6.1f}s  {res['verdict']}", file=out, flush=True)
    if res["trace"] is not None and show_trace:
        print(f"   config: {cfg}", file=out)
        if res["verdict"] == "DEADLOCK":
            print("   deadlocked state:\n     " + res["state"].replace("\n", "\n     "), file=out)
        print(f"   shortest trace ({len(res['trace'])} steps):", file=out)
        for lbl in res["trace"]:
            print("     " + lbl, file=out)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="configurations to run (default: all of --list)")
    ap.add_argument("--quick", action="store_true", help="only the configurations tests/test_model.py runs")
    ap.add_argument("--findings", action="store_true", help="the configurations that show a problem of the spec")
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), help="seed this bug (default configuration: its own)")
    ap.add_argument("--list-mutations", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the configurations")
    ap.add_argument("--observable-only", action="store_true", help="no ghost checks: only what a user could see")
    ap.add_argument("--max-states", type=int, default=5_000_000)
    a = ap.parse_args(argv)
    if a.list_mutations:
        for name, what in MUTATIONS.items():
            print(f"{name:32s} {what}")
        return 0
    if a.list:
        for name, kw in {**CONFIGS, **FINDINGS}.items():
            print(f"{name:42s} {Cfg(**kw)}")
        return 0
    if a.mutation and not a.names:
        res = run(f"{a.mutation} (mutation)", MUTATION_CONFIGS[a.mutation], a.mutation, a.observable_only, a.max_states)
        return 0 if not res["ok"] else 1
    failed = 0
    table = FINDINGS if a.findings else QUICK if a.quick else CONFIGS
    for name in a.names or table:
        res = run(name, {**CONFIGS, **FINDINGS}[name], a.mutation, a.observable_only, a.max_states)
        failed += not res["ok"]
    return 1 if failed and not a.mutation else 0


if __name__ == "__main__":
    sys.exit(main())
