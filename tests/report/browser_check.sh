#!/usr/bin/env bash
# `nashprune prune --report` in a real headless browser (Debian's chromium):
#   1. the tool writes the page of a quarter of MODEL's heads (a dry run);
#   2. chromium renders it to a screenshot and must log no console message: the
#      page has no script, so any message is the engine's own complaint (an
#      invalid SVG attribute, a load the page's Content-Security-Policy refused);
#   3. the screenshot (the top of the page: the grid of heads) must show the red
#      frame of every removed head: its pixels of the frame colour are counted
#      against the frames' areas in the page;
#   4. a control page with an invalid SVG attribute and an external image must
#      make the same chromium command log console messages, so a silent run in 2
#      means a clean page, not a deaf check.
# usage: browser_check.sh NASHPRUNE MODEL WORK CHROMIUM
set -euo pipefail
(($# == 4)) || { echo "usage: browser_check.sh NASHPRUNE MODEL WORK CHROMIUM" >&2; exit 2; }
tool=$1 model=$2 work=$3 chromium=$4
[[ -x $chromium ]] || { echo "FAIL: no chromium ('$chromium'): bash .ci/setup installs it (apt-get install chromium)"; exit 1; }
[[ -f $model ]] || { echo "FAIL: the model $model is missing"; exit 1; }
rm -rf "$work"
mkdir -p "$work"

# PAGE PNG LOG: chromium's screenshot of PAGE, its log (console messages are
# logged as lines with ":CONSOLE" at --v=0).
render() {
  timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --user-data-dir="$work/profile" --window-size=1000,800 --enable-logging=stderr --v=0 \
    --screenshot="$2" "file://$1" > "$3" 2>&1 || { cat "$3"; echo "FAIL: chromium failed on $1"; exit 1; }
  [[ -s $2 ]] || { cat "$3"; echo "FAIL: chromium wrote no screenshot of $1"; exit 1; }
}

page=$work/report.html
"$tool" prune "$model" --dry-run --unit heads --target 0.25 --report "$page" > "$work/prune.log"
read -r heads_before heads_after < <(sed -n 's/.*  heads \([0-9]*\) -> \([0-9]*\),.*/\1 \2/p' "$work/prune.log")
frames=$(grep -o 'class="removed"' "$page" | wc -l)
echo "page: $(wc -c < "$page") bytes; heads $heads_before -> $heads_after; $frames frames (one in the legend)"
((frames == heads_before - heads_after + 1)) || { echo "FAIL: $frames frames for $((heads_before - heads_after)) removed heads"; exit 1; }

render "$page" "$work/report.png" "$work/report.log"
if grep ':CONSOLE' "$work/report.log"; then echo "FAIL: chromium logged console messages on the report"; exit 1; fi
echo "ok: no console message"

# The frames' pixels: a frame of width w (stroke 2, on whole pixels) covers
# (w + 2)² - (w - 2)² = 8w pixels of exactly the frame colour.
python3 - "$page" "$work/report.png" <<'PY'
import re, struct, sys, zlib
page = open(sys.argv[1], encoding="utf-8").read()
colour = re.search(r"\.removed \{ stroke: #([0-9a-f]{6}); \}", page).group(1)
target = bytes.fromhex(colour)
widths = [int(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="(\d+)" height="\d+" class="removed"', page)]
expected = sum(8 * w for w in widths)

data = open(sys.argv[2], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unexpected PNG format {depth} {ctype} {interlace}"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), width * bpp
previous, found, at = bytearray(stride), 0, 0
for _ in range(height):  # undo the PNG row filters
    f, row = raw[at], bytearray(raw[at + 1:at + 1 + stride]); at += 1 + stride
    for i in range(stride):
        a = row[i - bpp] if i >= bpp else 0
        b, c = previous[i], previous[i - bpp] if i >= bpp else 0
        if f == 1: row[i] = (row[i] + a) & 255
        elif f == 2: row[i] = (row[i] + b) & 255
        elif f == 3: row[i] = (row[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    found += sum(1 for i in range(0, stride, bpp) if row[i:i + 3] == target)
    previous = row
print(f"screenshot {width}x{height}: {found} pixels of #{colour}, the frames cover {expected}")
if not 0.95 * expected <= found <= 1.05 * expected:
    sys.exit(f"FAIL: {found} frame pixels on the screenshot, expected {expected} (within 5 %)")
print("ok: every removed head is framed on the screenshot")
PY

control=$work/control.html
cat > "$control" <<'HTML'
<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><title>control</title></head>
<body><svg width="40" height="20"><rect x="0" y="0" width="-5" height="10"/></svg><img src="https://example.invalid/x.png" alt=""></body></html>
HTML
render "$control" "$work/control.png" "$work/control.log"
messages=$(grep -c ':CONSOLE' "$work/control.log" || true)
((messages >= 2)) || { cat "$work/control.log"; echo "FAIL: the control page's errors were not logged ($messages console messages)"; exit 1; }
echo "ok: the control page's $messages errors were logged"
