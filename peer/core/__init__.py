"""The pure core of roam's decisions (issue 13): migration, fail-safe and policy moves.

Functions and small state machines over (records, membership view, now) that return what to
do, never doing it: no asyncio, aiohttp, sqlite3, load balancer or peer API here (an
import-linter contract in setup.cfg says so), and the clock is always an argument. The timing
math (grace periods, dwell, retries, back-off) lives here apart from any timer, as
memberlist's `suspicion.go` keeps it apart; the agent's loops (peer/migration/) own the
timers and the I/O, and ask the core what each observation means. Stewardship and silence
were pure before (peer/homeset/stewardship.py, peer/homeset/silence.py) and are used as they are.

    moves      the rules of a commit and of a released copy (written once, used everywhere)
    journal    the journal's keys and entries, and what recovery does with an open one
    move       one migration as a state machine: stage, deadline, the commands of each step
    failsafe   when a lost location is a loss: suspicion, graces, retries (the fail-safe's math)
    policy     the policy loop's gates and dwell, around `placement.decide`
"""
