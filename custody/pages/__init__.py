"""Custody pages: datasets, versions (upload, progress), the desensitization report, seal.

Pages are thin: find the object through the user's memberships (another
organisation's object is a 404), check the role (viewers read, members act:
otherwise 403), call one custody service or selector, render. Uploads go from
the browser straight to the custody API (``static/js/upload.js``).
"""
