# SPDX-License-Identifier: GPL-3.0-or-later
"""The tests' support package: what more than one test folder uses, and the programs tests run.

- daemon: a real `overlord daemon` process on a real socket; the CLI run as a user runs it.
- system: a SystemOverlord on temporary directories with a sample store; the snaps tests make.
- failure_table: the recording backend and the injected failures of the managers' failure tables.
- ensure: EnsureRecorder, what a TaskRunner run alone asks of its Overlord.
- helpers: small engine helpers (a one-task change, a task by id, a child process, `overlord` run).
- pgcluster: a throwaway PostgreSQL server for the session.
- browser: headless Chromium from the distribution, driven for the web view tests.
- other_user: running Python as another local user (nobody).
- schema: the normalised schema of a database, for the migration tests.
- crash_workload, upgrade_killer, snap_crash_child, daemon_hooks: programs and hooks that tests start
  in processes of their own (and SIGKILL); concurrency_host, one runner host of the concurrency test.

Time in tests comes from engine.testing.FakeClock; a change is run to its end with
engine.testing's settle, run_change or drive (one helper per way of running, no private loops).
"""
