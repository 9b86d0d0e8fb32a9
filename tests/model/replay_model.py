"""Exhaustive-interleaving model of rdq's replay protocol (docs/replay.md, rdq/replay.pxi).

Plain Python, breadth first over states; the first violation found comes with a shortest trace.
Same conventions as multiring_model.py, much smaller: every word of the window has one writer (the
ring's producer), the owner only reads.

What is modelled (the real steps of rdq/replay.pxi)
  window:    per ring a control record [closed, inserted, check] (closed = offered + 1 once closed),
             C headers [stamp, ins, pcheck, hcheck] and C payload slots of two words.  stamp 0: never
             written; n + 1: message n whole; -(n + 1): message n being written.
  producer:  message n (payload ((r, n, 'a'), (r, n, 'b'))): choose its slot, then write it
               shm      store stamp = -(n+1); payload word 0, word 1; ins, pcheck = 0, hcheck;
                        store-release stamp = n + 1 (each store a step)
               checked  (rma, small rows) MPI_Put payload and header [n+1, ins, hash(payload), hcheck];
                        one MPI_Win_flush
               large    (rma) put busy header [-(n+1), ins, 0, hcheck], flush; put payload, flush;
                        put header [n+1, ins, 0, hcheck], flush
             then close(): control record (shm: inserted, check, store-release closed; rma: one put,
             one flush).  Variant closer: a second thread of the rank calls close() at any time; put
             and close hold the rank's busy flag (a put that meets the close waits, then finds it
             closed and writes nothing; a close waits for the put in progress).
  owner:     one thread, any interleaving of
               scan     replay_filled: load the stamp of slot `filled`; non-zero: one more resident
               control  replay_closed: load closed (0: not closed), inserted, check; valid: that ring
                        ended; end of stream once every ring ended
               read     replay_read of any resident (ring, slot) (at most R reads in all): header
                        h1 (4 loads), reject if stamp <= 0 or hcheck wrong; copy payload (2 loads);
                        header again (4 loads), reject if a word differs; checked: reject if the
                        hash of the copy is not pcheck; else the row is message stamp - 1.
             A rejected read stops at the load that decides it (the real code's remaining loads
             change nothing the owner can see); a load that finds nothing new is no step.

What is abstracted
  - The policies' random slot: message n < C goes to slot n (both policies), a later one to any
    slot or nowhere (reservoir skip), a nondeterministic choice.  sample(k)'s draws become "read
    any resident row", its retries more reads.
  - shm loads and stores are sequentially consistent (the fences and release/acquire of the real
    code order them; a relaxed seqlock's memcpy races are outside the model, as in docs/replay.md).
  - rma as in multiring_model: a put's words wait in the rank's pending set and land in the window
    later, in any order; MPI_Win_flush returns once all landed.  A pending word lands when an owner
    load first returns it (the load may also return the old value) or at the flush, which gives
    the owner every mixture of landed and not landed words.  MPI_Win_sync is implicit.
  - The hashes are ideal: hcheck = ("H", stamp, ins, pcheck, ring, slot), pcheck = ("P", payload,
    ring), check = ("K", closed, inserted, ring); a check matches iff recomputing gives it.

Checks (Violation; DEADLOCK: nothing can change in a state that is not a clean end)
  torn:       an accepted row is exactly the payload and insert number of the message it claims,
              and that message was put into that slot
  final:      after end of stream every read is accepted and returns the slot's last message, the
              scan finds min(C, inserted) resident, and each close record counts exactly the puts
              offered and inserted (ghost); no put succeeds after its rank closed
  no wait:    a producer's enabled steps are the same whatever the owner's state (the owner is
              replaced by its initial state and the steps compared): a put never waits for a read

Where a rule matters (the seeded bugs, configuration by configuration): accepting a busy stamp is
harmless on shm (the busy store leaves the old hcheck, which no longer matches) and on rma checked
(no busy stamps), torn on rma large; the second header read is redundant on rma checked (the hash
ties the copy to h1), needed on shm and rma large.

FINDING, fixed (FINDINGS, put_error): on rma, an MPI error in a put's flush (the window has
MPI_ERRORS_RETURN) makes replay_write raise with r.unsure set; the large path may have left its
busy header in the window.  The rank puts no more, so that slot never becomes readable again, yet
it is resident (stamp != 0), and close() still ends the stream.  sample() used to retry such a row
for ever once no other resident index was undrawn (after end of stream: every short batch); now
_fill_rows drops a row still rejected after end of stream when no other message is left (a shorter
batch), and a bounded sample() gives up on a half-written row after its timeout.  The model allows
a rejection after end of stream only for the slot whose write failed (trace that led to the fix,
rma large, M=1, C=1: put busy header; [its stamp lands] owner's scan: filled=1; the flush fails;
close() puts its record; the owner reads it: end of stream; a read of slot 0 finds stamp -1).

python replay_model.py [NAME ...] [--more | --findings] [--mutation NAME] [--list] [--list-mutations]
"""
import argparse
import sys
import time
from collections import deque, namedtuple


class Violation(Exception):
    """A check failed."""


MUTATIONS = {
    "shm_no_busy": "shm: the writer does not store the busy stamp before the payload",
    "rma_large_no_first_flush": "rma large: busy header and payload put in one epoch (no flush between)",
    "rma_large_one_epoch": "rma large: payload and stable header put without the flush between them",
    "reader_no_recheck": "the reader does not read the header again after the copy",
    "reader_accepts_busy": "the reader accepts a negative (busy) stamp, as message -stamp - 1",
    "checked_no_hash": "rma checked: the reader does not compare the hash of its copy with pcheck",
    "close_before_flush": "rma: close() puts its record before the last put's flush (one epoch)",
    "put_waits_for_reader": "a put does not write a slot the owner is reading (waits for the reader)",
}
MUT = set()          # the seeded bugs in effect


class Cfg:
    """One configuration: transport and write path, bounds, closer thread."""

    def __init__(self, transport="shm", path="checked", P=1, M=3, C=2, R=2, closer=False, skips=True,
                 put_error=False):
        assert transport in ("shm", "rma") and path in ("checked", "large")
        assert not (put_error and (closer or transport == "shm"))
        self.transport, self.path = transport, path
        self.shm = transport == "shm"
        self.checked = not self.shm and path == "checked"
        self.P, self.M, self.C, self.R = P, M, C, R
        self.msgs = tuple(M) if isinstance(M, (tuple, list)) else (M,) * P    # messages per producer
        assert len(self.msgs) == P
        self.closer, self.skips = closer, skips
        # FINDINGS: an MPI_Win_flush of a put may fail (MPI_ERRORS_RETURN): the put raises with its
        # words in flight (they may still land), r.unsure stops further puts, the user calls close()
        self.put_error = put_error
        self.pay0 = 3 + 4 * C

    def hdr(self, s, w):         # w: 0 stamp, 1 ins, 2 pcheck, 3 hcheck
        return 3 + 4 * s + w

    def pay(self, s, w):
        return self.pay0 + 2 * s + w

    def word_name(self, a):
        if a < 3:
            return ("closed", "inserted", "check")[a]
        if a < self.pay0:
            s, w = divmod(a - 3, 4)
            return f"hdr[{s}].{('stamp', 'ins', 'pcheck', 'hcheck')[w]}"
        s, w = divmod(a - self.pay0, 2)
        return f"slot {s} word {w}"

    def __str__(self):
        path = "shm" if self.shm else f"rma {self.path}"
        return (f"{path} P={self.P} M={self.M} C={self.C} R={self.R}" + (" closer" if self.closer else "")
                + ("" if self.skips else " no-skips") + (" put-error" if self.put_error else ""))


# --- state -------------------------------------------------------------------------------------------
# mem:   per ring a tuple of words: control record (3), C headers (4 each), C payloads (2 each)
# Prod:  pc of the main thread (idle, a write or close phase, done), n = messages offered (the seq
#        being written while in a write), ins = inserted, slot being written, pend = its rma words
#        not yet landed, placed (ghost and policy state: the slot of each message offered, -1
#        skipped), closed, busy (the rank's busy flag), closer (pc of the closer thread, or None),
#        unsure (put_error: a flush of the put of message n failed; the rank closes next)
# Owner: filled (per ring), ended (per ring: (offered, inserted) of its valid close record, or None),
#        eos, reads (row reads left), rd = read in progress (ring, slot, h1, copy, h2 words matched),
#        ck = control record read in progress (ring, words)
State = namedtuple("State", "mem prods owner")
Prod = namedtuple("Prod", "pc n ins slot pend placed closed busy closer unsure")
Owner = namedtuple("Owner", "filled ended eos reads rd ck")


def tset(tup, i, v):
    return tup[:i] + (v,) + tup[i + 1:]


def payload(r, n):
    return ((r, n, "a"), (r, n, "b"))


def pay_hash(words, r):
    return ("P", tuple(words), r)


def hdr_hash(stamp, ins, pcheck, r, s):
    return ("H", stamp, ins, pcheck, r, s)


def ctrl_hash(closed, inserted, r):
    return ("K", closed, inserted, r)


def header(cfg, r, s, stamp, ins):
    """What a put writes (busy: a negative stamp); pcheck only on rma checked."""
    pcheck = pay_hash(payload(r, stamp - 1), r) if cfg.checked else 0
    return (stamp, ins, pcheck, hdr_hash(stamp, ins, pcheck, r, s))


def initial(cfg):
    C = cfg.C
    mem = ((0,) * (3 + 6 * C),) * cfg.P
    prod = Prod("idle", 0, 0, -1, frozenset(), (), False, False, "start" if cfg.closer else None, False)
    owner = Owner((0,) * cfg.P, (None,) * cfg.P, False, cfg.R, None, None)
    return State(mem, (prod,) * cfg.P, owner)


def store(st, r, addr, val):
    return st._replace(mem=tset(st.mem, r, tset(st.mem[r], addr, val)))


def set_prod(st, r, **kw):
    return st._replace(prods=tset(st.prods, r, st.prods[r]._replace(**kw)))


def land_all(st, r):
    """MPI_Win_flush returns once every put of the rank has landed."""
    for a, v in st.prods[r].pend:
        st = store(st, r, a, v)
    return set_prod(st, r, pend=frozenset())


def words(vals, w0):
    return frozenset((w0 + i, v) for i, v in enumerate(vals))


# --- producer ----------------------------------------------------------------------------------------

def thread_pc(prod, who):
    return prod.pc if who == "main" else prod.closer


def set_pc(st, r, who, pc, **kw):
    return set_prod(st, r, **({"pc": pc} if who == "main" else {"closer": pc}), **kw)


def choose_steps(cfg, st, r):
    """put(): the slot of message n (a local choice), and the write's first shared step."""
    p = st.prods[r]
    n, busy = p.n, cfg.closer
    if p.closed:
        raise Violation(f"PUT AFTER CLOSE: ring {r} message {n}")
    choices = [n] if n < cfg.C else list(range(cfg.C)) + ([-1] if cfg.skips else [])
    out = []
    for s in choices:
        if s < 0:
            out.append((f"put seq {n}: skipped", set_prod(st, r, n=n + 1, placed=p.placed + (-1,))))
            continue
        if "put_waits_for_reader" in MUT and st.owner.rd is not None and st.owner.rd[:2] == (r, s):
            continue
        st2 = set_prod(st, r, slot=s, placed=p.placed + (s,), busy=busy)
        lbl = f"put seq {n} -> slot {s}: "
        hd = header(cfg, r, s, n + 1, p.ins)
        pw = words(payload(r, n), cfg.pay(s, 0))
        if cfg.shm:
            if "shm_no_busy" in MUT:
                out.append((lbl + "(no busy stamp)", set_prod(st2, r, pc="p0")))
            else:
                st2 = store(st2, r, cfg.hdr(s, 0), -(n + 1))
                out.append((lbl + f"store stamp={-(n + 1)}", set_prod(st2, r, pc="p0")))
        elif cfg.checked:
            out.append((lbl + "MPI_Put payload, header",
                        set_prod(st2, r, pc="f_last", pend=pw | words(hd, cfg.hdr(s, 0)))))
        else:
            busy_hd = words(header(cfg, r, s, -(n + 1), p.ins), cfg.hdr(s, 0))
            if "rma_large_no_first_flush" in MUT:
                out.append((lbl + "MPI_Put busy header, payload", set_prod(st2, r, pc="f_pay", pend=busy_hd | pw)))
            else:
                out.append((lbl + "MPI_Put busy header", set_prod(st2, r, pc="f_busy", pend=busy_hd)))
    return out


SHM_NEXT = {"p0": "p1", "p1": "ins", "ins": "pck", "pck": "hck", "hck": "stamp"}


def write_step(cfg, st, r):
    p = st.prods[r]
    n, s, pc = p.n, p.slot, p.pc
    hd = header(cfg, r, s, n + 1, p.ins)
    if pc in SHM_NEXT or pc == "stamp":
        addr, v = {"p0": (cfg.pay(s, 0), payload(r, n)[0]), "p1": (cfg.pay(s, 1), payload(r, n)[1]),
                   "ins": (cfg.hdr(s, 1), hd[1]), "pck": (cfg.hdr(s, 2), hd[2]), "hck": (cfg.hdr(s, 3), hd[3]),
                   "stamp": (cfg.hdr(s, 0), hd[0])}[pc]
        st = store(st, r, addr, v)
        if pc == "stamp":
            return [(f"store-release hdr[{s}].stamp={n + 1}: put returns", put_done(st, r))]
        return [(f"store {cfg.word_name(addr)}", set_prod(st, r, pc=SHM_NEXT[pc]))]
    if pc == "f_last" and "close_before_flush" in MUT and n == cfg.msgs[r] - 1:
        return [("put returns, its flush left to close()", put_done(st, r))]
    err = []        # put_error: the flush fails; the put's words may still land
    if cfg.put_error:
        err = [("flush fails: put raises, rank unsure", set_prod(st, r, pc="idle", slot=-1, unsure=True))]
    st = land_all(st, r)
    if pc == "f_busy":
        pw = words(payload(r, n), cfg.pay(s, 0))
        if "rma_large_one_epoch" in MUT:
            return err + [("flush; MPI_Put payload, header",
                           set_prod(st, r, pc="f_last", pend=pw | words(hd, cfg.hdr(s, 0))))]
        return err + [("flush; MPI_Put payload", set_prod(st, r, pc="f_pay", pend=pw))]
    if pc == "f_pay":
        return err + [("flush; MPI_Put header", set_prod(st, r, pc="f_last", pend=words(hd, cfg.hdr(s, 0))))]
    return err + [("flush: put returns", put_done(st, r))]


def put_done(st, r):
    p = st.prods[r]
    return set_prod(st, r, pc="idle", n=p.n + 1, ins=p.ins + 1, slot=-1, busy=False)


def start_close(cfg, st, r, who):
    """close(): the record [offered + 1, inserted, check]; shm's first store or rma's put."""
    p = st.prods[r]
    rec = (p.n + 1, p.ins, ctrl_hash(p.n + 1, p.ins, r))
    if cfg.shm:
        return f"close(): store inserted={p.ins}", set_pc(store(st, r, 1, p.ins), r, who, "k_check")
    return (f"close(): MPI_Put control record closed={p.n + 1}",
            set_pc(st, r, who, "k_flush", pend=p.pend | words(rec, 0)))


def close_step(cfg, st, r, who):
    p = st.prods[r]
    if thread_pc(p, who) == "k_check":
        return [("store close check", set_pc(store(st, r, 2, ctrl_hash(p.n + 1, p.ins, r)), r, who, "k_closed"))]
    if thread_pc(p, who) == "k_closed":
        st, lbl = store(st, r, 0, p.n + 1), f"store-release closed={p.n + 1}: closed"
    else:
        st, lbl = land_all(st, r), "flush: closed"
    return [(lbl, set_pc(st, r, who, "done", closed=True, busy=False))]


def producer_steps(cfg, st, r):
    p = st.prods[r]
    out = []
    if p.closer not in (None, "done"):
        if p.closer == "start":
            if not p.busy:      # close() waits for a put in progress
                if p.closed:
                    out.append(("closer: close(): already closed", set_prod(st, r, closer="done")))
                else:
                    lbl, st2 = start_close(cfg, set_prod(st, r, busy=True), r, "closer")
                    out.append(("closer: take busy; " + lbl, st2))
        else:
            out += [("closer: " + lbl, s2) for lbl, s2 in close_step(cfg, st, r, "closer")]
    if p.pc == "idle":
        if p.unsure:
            lbl, st2 = start_close(cfg, st, r, "main")
            out.append(("after the error: " + lbl, st2))
        elif cfg.closer and p.busy:
            pass                # waits for the close() of the other thread
        elif cfg.closer and p.closed:
            out.append(("put()/close(): Closed", set_prod(st, r, pc="done")))
        elif p.n < cfg.msgs[r]:
            out += choose_steps(cfg, st, r)
        else:
            lbl, st2 = start_close(cfg, set_prod(st, r, busy=cfg.closer), r, "main")
            out.append((lbl, st2))
    elif p.pc.startswith("k_"):
        out += close_step(cfg, st, r, "main")
    elif p.pc != "done":
        out += write_step(cfg, st, r)
    return out


# --- owner ---------------------------------------------------------------------------------------------

def loads(cfg, st, r, addr):
    """An owner load: the word as it is, or a pending put's value, which lands now."""
    out = [(st.mem[r][addr], st, "")]
    for a, v in st.prods[r].pend:
        if a == addr:
            st2 = set_prod(store(st, r, a, v), r, pend=st.prods[r].pend - {(a, v)})
            out.append((v, st2, f"[{cfg.word_name(a)} lands] "))
    return out


def set_owner(st, **kw):
    return st._replace(owner=st.owner._replace(**kw))


def last_in(placed, s):
    return max((n for n, x in enumerate(placed) if x == s), default=None)


def owner_steps(cfg, st):
    o = st.owner
    if o.rd is not None:
        return prefix(f"owner: read ring {o.rd[0]} slot {o.rd[1]}: ", read_step(cfg, st))
    if o.ck is not None:
        return control_step(cfg, st)
    out = []
    for r in range(cfg.P):
        f = o.filled[r]
        if f < cfg.C:                       # replay_filled
            for v, st2, land in loads(cfg, st, r, cfg.hdr(f, 0)):
                if v != 0:
                    out.append((f"{land}owner: scan: hdr[{f}].stamp={v}, ring {r} filled={f + 1}",
                                set_owner(st2, filled=tset(o.filled, r, f + 1))))
                    continue
                ended = o.ended[r]
                if o.eos and f < min(cfg.C, ended[1]):
                    raise Violation(f"RESIDENT SHORT AFTER END OF STREAM: ring {r} closed with {ended[1]} inserted, "
                                    f"hdr[{f}].stamp is 0")
                out.append((f"{land}owner: scan: hdr[{f}].stamp=0", st2))
        if o.ended[r] is None:              # replay_closed
            for v, st2, land in loads(cfg, st, r, 0):
                if v != 0:
                    out.append((f"{land}owner: load closed={v}", set_owner(st2, ck=(r, (v,)))))
                else:
                    out.append((f"{land}owner: load closed=0", st2))
        if o.reads:                         # replay_read of a resident row
            for s in range(f):
                out += prefix(f"owner: read ring {r} slot {s}: ", read_step(cfg, set_owner(st, rd=(r, s, (), (), 0))))
    return out


def prefix(lbl, outs):
    return [(lbl + l, s) for l, s in outs]


def control_step(cfg, st):
    o = st.owner
    r, vals = o.ck
    out = []
    for v, st2, land in loads(cfg, st, r, len(vals)):
        vals2 = vals + (v,)
        lbl = f"{land}owner: load {cfg.word_name(len(vals))}={v}"
        if len(vals2) < 3:
            out.append((lbl, set_owner(st2, ck=(r, vals2))))
        elif vals2[2] != ctrl_hash(vals2[0], vals2[1], r):
            out.append((lbl + ": no valid close record", set_owner(st2, ck=None)))
        else:
            p = st.prods[r]
            offered = vals2[0] - 1
            if (offered, vals2[1]) != (len(p.placed) - p.unsure, sum(x >= 0 for x in p.placed) - p.unsure):
                raise Violation(f"CLOSE COUNT WRONG: ring {r} closed with offered={offered} inserted={vals2[1]}, "
                                f"its puts: {p.placed}")
            ended = tset(o.ended, r, (offered, vals2[1]))
            eos = all(e is not None for e in ended)
            out.append((lbl + f": ring {r} closed" + (": END OF STREAM" if eos else ""),
                        set_owner(st2, ck=None, ended=ended, eos=eos)))
    return out


def read_step(cfg, st):
    """One load of replay_read in progress."""
    o = st.owner
    r, s, h1, copy, h2 = o.rd
    if len(h1) < 4:
        addr = cfg.hdr(s, len(h1))
    elif len(copy) < 2:
        addr = cfg.pay(s, len(copy))
    else:
        addr = cfg.hdr(s, h2)
    out = []
    for v, st2, land in loads(cfg, st, r, addr):
        lbl = f"{land}{cfg.word_name(addr)}={v}"
        if len(h1) < 4:
            h1b = h1 + (v,)
            if len(h1b) == 1 and (v == 0 if "reader_accepts_busy" in MUT else v <= 0):
                out.append(reject(cfg, st2, lbl + ": rejected (not stable)"))
            elif len(h1b) == 4 and h1b[3] != hdr_hash(h1b[0], h1b[1], h1b[2], r, s):
                out.append(reject(cfg, st2, lbl + ": rejected (header check)"))
            else:
                out.append((lbl, set_owner(st2, rd=(r, s, h1b, copy, h2))))
        elif len(copy) < 2:
            copy2 = copy + (v,)
            if len(copy2) == 2 and "reader_no_recheck" in MUT:
                out.append(finish_read(cfg, st2, lbl, r, s, h1, copy2))
            else:
                out.append((lbl, set_owner(st2, rd=(r, s, h1, copy2, h2))))
        elif v != h1[h2]:
            out.append(reject(cfg, st2, lbl + ": rejected (header changed)"))
        elif h2 < 3:
            out.append((lbl, set_owner(st2, rd=(r, s, h1, copy, h2 + 1))))
        else:
            out.append(finish_read(cfg, st2, lbl, r, s, h1, copy))
    return out


def reject(cfg, st, lbl):
    o = st.owner
    if o.eos:
        # rdq drops such a row (_fill_rows): allowed only for the slot whose write failed
        p = st.prods[o.rd[0]]
        if not (p.unsure and p.placed and p.placed[-1] == o.rd[1]):
            raise Violation(f"REDRAWN AFTER END OF STREAM: ring {o.rd[0]} slot {o.rd[1]}: {lbl}")
        return lbl + ": dropped (its write failed)", set_owner(st, rd=None, reads=o.reads - 1)
    return lbl, set_owner(st, rd=None, reads=o.reads - 1)


def finish_read(cfg, st, lbl, r, s, h1, copy):
    if cfg.checked and "checked_no_hash" not in MUT and pay_hash(copy, r) != h1[2]:
        return reject(cfg, st, lbl + ": rejected (payload hash)")
    seq = abs(h1[0]) - 1
    placed = st.prods[r].placed
    if not (seq < len(placed) and placed[seq] == s):
        raise Violation(f"ACCEPTED A MESSAGE NOT IN ITS SLOT: ring {r} slot {s} ({lbl}) claims seq {seq}, "
                        f"puts: {placed}")
    if copy != payload(r, seq) or h1[1] != sum(x >= 0 for x in placed[:seq]):
        raise Violation(f"TORN SAMPLE: ring {r} slot {s} ({lbl}) accepted as seq {seq} (ins {h1[1]}) "
                        f"with payload {copy}, expected {payload(r, seq)}")
    if st.owner.eos and seq != last_in(placed, s):
        raise Violation(f"STALE SAMPLE AFTER END OF STREAM: ring {r} slot {s} gave seq {seq}, "
                        f"its last message is {last_in(placed, s)}")
    return (lbl + f": accepted seq {seq}", set_owner(st, rd=None, reads=st.owner.reads - 1))


# --- search ---------------------------------------------------------------------------------------------

def successors(cfg, st):
    out = owner_steps(cfg, st)
    blind = st._replace(owner=initial(cfg).owner)
    for r in range(cfg.P):
        steps = producer_steps(cfg, st, r)
        alone = producer_steps(cfg, blind, r)
        if sorted(l for l, _ in steps) != sorted(l for l, _ in alone):
            raise Violation(f"PRODUCER WAITS FOR THE OWNER: ring {r} can do {sorted(l for l, _ in alone)} "
                            f"on its own, but only {sorted(l for l, _ in steps)} with the owner as it is")
        out += [(f"producer {r}: {lbl}", s2) for lbl, s2 in steps]
    return [(lbl, s2) for lbl, s2 in out if s2 != st]     # a load that found nothing new is no step


def is_final(cfg, st):
    o = st.owner
    return (o.eos and o.rd is None and o.ck is None
            and all(p.pc == "done" and not p.pend and p.closer in (None, "done") for p in st.prods))


def explore(cfg, max_states=2_000_000):
    s0 = initial(cfg)
    parent = {s0: None}
    queue = deque([s0])
    transitions = finals = accepted = rejected = accepted_after_eos = 0
    bad = verdict = None
    t0 = time.time()
    while queue:
        st = queue.popleft()
        try:
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
            if ": accepted seq" in lbl:
                accepted += 1
                accepted_after_eos += st.owner.eos
            rejected += ": rejected" in lbl
            if s2 not in parent:
                parent[s2] = (st, lbl)
                queue.append(s2)
        if len(parent) > max_states:
            verdict = f"INCOMPLETE: state limit {max_states:,} reached"
            break
    res = dict(states=len(parent), transitions=transitions, finals=finals, seconds=time.time() - t0,
               accepted=accepted, rejected=rejected, accepted_after_eos=accepted_after_eos,
               verdict=verdict or "OK", ok=verdict is None, trace=None, state=None)
    if bad is not None:
        labels = []
        while parent[bad] is not None:
            bad, lbl = parent[bad]
            labels.append(lbl)
        res["trace"] = labels[::-1]
    return res


# --- configurations -------------------------------------------------------------------------------------

# Every write path with overwrites (M > C) and skips, a closer thread, two producers.
# tests/test_replay_model.py runs these.
CONFIGS = {
    "shm-M3-C2": dict(transport="shm", M=3, C=2),
    "shm-M2-C1-closer": dict(transport="shm", M=2, C=1, closer=True),
    "shm-P2-M2+1-C1": dict(transport="shm", P=2, M=(2, 1), C=1, R=1, skips=False),
    "rma-checked-M3-C2": dict(transport="rma", path="checked", M=3, C=2),
    "rma-checked-M2-C1-closer": dict(transport="rma", path="checked", M=2, C=1, closer=True),
    "rma-large-M3-C2": dict(transport="rma", path="large", M=3, C=2),
    "rma-large-M2-C1-closer": dict(transport="rma", path="large", M=2, C=1, closer=True),
}

# Larger bounds (about a minute in all; all pass): python replay_model.py --more
MORE = {
    "shm-M4-C2-R3": dict(transport="shm", M=4, C=2, R=3),
    "shm-M3-C2-closer": dict(transport="shm", M=3, C=2, closer=True),
    "shm-P2-M2-C1-R2": dict(transport="shm", P=2, M=2, C=1, R=2),
    "rma-checked-M4-C2-R3": dict(transport="rma", path="checked", M=4, C=2, R=3),
    "rma-checked-M4-C3": dict(transport="rma", path="checked", M=4, C=3),
    "rma-checked-M3-C2-closer": dict(transport="rma", path="checked", M=3, C=2, closer=True),
    "rma-large-M4-C2-R3": dict(transport="rma", path="large", M=4, C=2, R=3),
    "rma-large-M3-C2-closer": dict(transport="rma", path="large", M=3, C=2, closer=True),
    "rma-large-P2-M2-C1-R2": dict(transport="rma", path="large", P=2, M=2, C=1, R=2),
}

# Where the protocol is weaker than docs/replay.md claims (see FINDING in the module docstring).
FINDINGS = {
    "rma-large-M1-C1-put-error": dict(transport="rma", path="large", M=1, C=1, R=1, put_error=True),
}

# the configuration in which each seeded bug is shown
MUTATION_CONFIGS = {
    "shm_no_busy": CONFIGS["shm-M3-C2"],
    "rma_large_no_first_flush": CONFIGS["rma-large-M3-C2"],
    "rma_large_one_epoch": CONFIGS["rma-large-M3-C2"],
    "reader_no_recheck": CONFIGS["shm-M3-C2"],
    "reader_accepts_busy": CONFIGS["rma-large-M3-C2"],
    "checked_no_hash": CONFIGS["rma-checked-M3-C2"],
    "close_before_flush": CONFIGS["rma-checked-M3-C2"],
    "put_waits_for_reader": CONFIGS["shm-M3-C2"],
}


def run(name, kw, mutation=None, max_states=2_000_000, show_trace=True, out=sys.stdout):
    MUT.clear()
    if mutation:
        MUT.add(mutation)
    try:
        cfg = Cfg(**kw)
        res = explore(cfg, max_states)
    finally:
        MUT.clear()
    print(f"{name:30s} states={res['states']:>7,} transitions={res['transitions']:>7,} "
          f"reads accepted/rejected/after eos={res['accepted']}/{res['rejected']}/{res['accepted_after_eos']} "
          f"{res['seconds']:4.1f}s  {res['verdict']}", file=out, flush=True)
    if res["trace"] is not None and show_trace:
        print(f"   config: {cfg}\n   shortest trace ({len(res['trace'])} steps):", file=out)
        for lbl in res["trace"]:
            print("     " + lbl, file=out)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="configurations to run (default: all)")
    ap.add_argument("--more", action="store_true", help="larger bounds than the tests run")
    ap.add_argument("--findings", action="store_true", help="the configurations that show a weakness")
    ap.add_argument("--mutation", choices=sorted(MUTATIONS), help="seed this bug (default configuration: its own)")
    ap.add_argument("--list", action="store_true", help="list the configurations")
    ap.add_argument("--list-mutations", action="store_true")
    ap.add_argument("--max-states", type=int, default=2_000_000)
    a = ap.parse_args(argv)
    if a.list_mutations:
        for name, what in MUTATIONS.items():
            print(f"{name:26s} {what}")
        return 0
    if a.list:
        for name, kw in {**CONFIGS, **MORE, **FINDINGS}.items():
            print(f"{name:36s} {Cfg(**kw)}")
        return 0
    if a.mutation and not a.names:
        res = run(f"{a.mutation} (mutation)", MUTATION_CONFIGS[a.mutation], a.mutation, a.max_states)
        return 0 if not res["ok"] else 1
    failed = 0
    for name in a.names or (FINDINGS if a.findings else MORE if a.more else CONFIGS):
        res = run(name, {**CONFIGS, **MORE, **FINDINGS}[name], a.mutation, a.max_states)
        failed += not res["ok"]
    return 1 if failed and not a.mutation else 0


if __name__ == "__main__":
    sys.exit(main())
