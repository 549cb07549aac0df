#!/usr/bin/env bash
# Draws Coffer's app icon and its tray icons (one per sync state) with
# ImageMagick. The PNGs are committed; run this again only to change them:
#   apt-get install imagemagick && icons/make.sh
set -euo pipefail
cd "$(dirname "$0")"

# The app icon: a dark rounded chest with a gold keyhole.
app() {
  local size=$1 out=$2 s
  s=$(awk "BEGIN{print $size/512}")
  convert -size "${size}x${size}" xc:none \
    -fill '#1f2937' -draw "roundrectangle $(awk "BEGIN{print 32*$s, 64*$s, 480*$s, 448*$s, 64*$s, 64*$s}")" \
    -fill '#374151' -draw "rectangle $(awk "BEGIN{print 32*$s, 200*$s, 480*$s, 224*$s}")" \
    -fill '#f5b301' -draw "circle $(awk "BEGIN{print 256*$s, 290*$s, 256*$s, 330*$s}")" \
    -fill '#f5b301' -draw "polygon $(awk "BEGIN{print 236*$s\",\"300*$s, 276*$s\",\"300*$s, 290*$s\",\"400*$s, 222*$s\",\"400*$s}")" \
    "$out"
}
app 512 icon.png
app 32 32x32.png
app 128 128x128.png
app 256 128x128@2x.png

# Tray icons, 64x64: the chest in the state's colour with a white mark.
tray() {
  local name=$1 colour=$2
  shift 2
  convert -size 64x64 xc:none \
    -fill "$colour" -draw 'roundrectangle 4,8 60,56 10,10' \
    -stroke white -strokewidth 5 "$@" \
    "tray-$name.png"
}
tray up-to-date '#16a34a' -fill none -draw 'polyline 18,33 28,43 46,22'
tray syncing '#2563eb' -fill none -draw 'arc 18,18 46,46 200,340' -fill white -draw 'polygon 46,22 50,36 36,32'
tray paused '#6b7280' -fill white -draw 'rectangle 22,20 28,44' -draw 'rectangle 36,20 42,44'
tray offline '#9ca3af' -fill none -draw 'line 18,20 46,44' -draw 'line 46,20 18,44'
tray error '#dc2626' -fill white -draw 'rectangle 30,16 34,36' -draw 'circle 32,44 32,46'
tray conflict '#ea580c' -fill none -draw 'line 22,22 32,32' -draw 'line 42,22 32,32' -draw 'line 32,32 32,46'
