"""The directory listing page's stylesheet (files/listing.py), inline in every page: light and dark."""

STYLE = """\
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--stripe:#f6f8fa;\
--hover:#eef1f4;--link:#0969da;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#30363d;\
--stripe:#151b23;--hover:#1f2630;--link:#4493f8;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:68rem;padding:2rem 1.25rem 3rem;background:var(--bg);color:var(--fg);\
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Noto Sans",Arial,sans-serif}
h1{font-size:1.4rem;font-weight:600;margin:0 0 1rem;overflow-wrap:anywhere}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
form{display:flex;gap:.5rem;margin:0 0 1.25rem}table{width:100%;border-collapse:collapse}
input[type=search]{flex:1;max-width:26rem;padding:.4rem .7rem;font:inherit;color:inherit;\
background:var(--bg);border:1px solid var(--line);border-radius:6px}
button{padding:.4rem 1rem;font:inherit;color:inherit;background:var(--stripe);border:1px solid var(--line);\
border-radius:6px;cursor:pointer}
th,td{padding:.45rem .75rem;text-align:left;border-bottom:1px solid var(--line)}
th{font-size:.8rem;font-weight:600;letter-spacing:.03em;text-transform:uppercase;color:var(--muted);\
white-space:nowrap}
th a{color:inherit}tbody tr:nth-child(even){background:var(--stripe)}tbody tr:hover{background:var(--hover)}
td.name{overflow-wrap:anywhere}tr.dir td.name a{font-weight:600}
.size{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.time{white-space:nowrap;font-variant-numeric:tabular-nums;color:var(--muted)}
.note{margin:0 0 1rem;padding:.6rem .9rem;border:1px solid var(--warn);border-radius:6px;color:var(--warn)}
.empty{text-align:center;color:var(--muted);padding:1.5rem}
footer{display:flex;gap:1.25rem;flex-wrap:wrap;margin-top:1rem;color:var(--muted);font-size:.9rem}
"""
