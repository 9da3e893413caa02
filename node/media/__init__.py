"""Media: uploads, their bytes, previews, and who may fetch them.

Read in the order an upload travels:

    intake      the request body, streamed to a temp file: size limit, read timeouts, sha256
    sniff       the type, from the bytes, against an allowlist (the client's type is a hint)
    images      metadata stripped (re-encoded by Pillow) and a small preview, in worker threads
    blobs/      where the bytes live: PostgreSQL chunks (default) or an S3-compatible store
    catalog     the `media` table: records, the access rule, attachment claims, cleanup
    ranges      which bytes a download sends (Range, If-Range)
    service     the one entry point the edges call (upload, open for download, resolve)
    cleanup     the loop that deletes uploads never attached

Nothing here imports the HTTP edge, the actors or the cluster.
"""
