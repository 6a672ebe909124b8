"""The admin audit console (``/console/``): the audit log, its verification, the ledger and the keys.

Platform staff only. Auditors read everything here and run the read-only
checks; only operators act (key operations), and their sessions have passed
TOTP (``common.otp.OperatorOtpMiddleware``). Every console action is written
to the audit log: exports, chain verifications, ledger checks and key
operations (the key services audit themselves). Browsing the log is not,
so that reading it does not grow it.
"""
