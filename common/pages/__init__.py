"""Pages of the foundation: sign-in and account, organisations, API tokens.

Pages are thin: parse a form, call one service or selector, render. Domain
errors become HTTP here: ``NotFound`` is 404, ``NotPermitted`` 403.
"""
