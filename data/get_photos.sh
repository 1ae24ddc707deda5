#!/usr/bin/env bash
# shellcheck disable=SC2034  # the allow-list arrays are read through a nameref
# Real photos for training demos and benchmarks/quality.py, without COCO: camera photographs
# (nature, landscapes, animals, still lifes, architecture) taken from Debian's wallpaper packages.
#
#     bash data/get_photos.sh        # from any directory; writes <repo>/data/photos/
#
# Each package is fetched with `apt-get download` into a temporary directory and unpacked with
# `dpkg -x` (nothing is installed, no root needed). Only the files on the allow-lists below are
# copied, as <package>_<name>.<ext>: each one was looked at and is a real photo. Flat, gradient,
# abstract, vector-art and rendered wallpapers are left out on purpose: their near-constant
# crops make instance norm amplify noise. Every package's copyright file is kept beside the
# photos in data/photos/licences/ (data/README.md lists the licences and authors).
#
# Re-running is safe: a package whose photos are all in place is not downloaded again (delete
# data/photos/ to fetch everything afresh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/photos"
MAX_SIDE=8192  # stylenet refuses training photos over 8192*8192 pixels (stylenet/data.py)

die() {
    echo "get_photos.sh: $*" >&2
    exit 1
}

# Allow-lists: "<path inside the package>|<name in data/photos/ without the package prefix>".
MATE=usr/share/backgrounds/mate/nature
MATE_BACKGROUNDS=(  # GPL-2+
    "$MATE/Aqua.jpg|Aqua.jpg"
    "$MATE/Blinds.jpg|Blinds.jpg"
    "$MATE/Dune.jpg|Dune.jpg"
    "$MATE/FreshFlower.jpg|FreshFlower.jpg"
    "$MATE/Garden.jpg|Garden.jpg"
    "$MATE/GreenMeadow.jpg|GreenMeadow.jpg"
    "$MATE/LadyBird.jpg|LadyBird.jpg"
    "$MATE/RainDrops.jpg|RainDrops.jpg"
    "$MATE/Storm.jpg|Storm.jpg"
    "$MATE/TwoWings.jpg|TwoWings.jpg"
    "$MATE/Wood.jpg|Wood.jpg"
    "$MATE/YellowFlower.jpg|YellowFlower.jpg"
)
PLASMA=usr/share/wallpapers
PLASMA_WORKSPACE_WALLPAPERS=(  # GPL-2+ (debian/copyright); LGPLv3 in each metadata.json
    "$PLASMA/BytheWater/contents/images/2560x1600.jpg|BytheWater.jpg"
    "$PLASMA/ColdRipple/contents/images/2560x1600.jpg|ColdRipple.jpg"
    "$PLASMA/ColorfulCups/contents/images/2560x1600.jpg|ColorfulCups.jpg"
    "$PLASMA/DarkestHour/contents/images/2560x1600.jpg|DarkestHour.jpg"
    "$PLASMA/EveningGlow/contents/images/2560x1600.jpg|EveningGlow.jpg"
    "$PLASMA/FallenLeaf/contents/images/2560x1600.jpg|FallenLeaf.jpg"
    "$PLASMA/Grey/contents/images/2560x1600.jpg|Grey.jpg"
    "$PLASMA/Kite/contents/images/2560x1600.jpg|Kite.jpg"
    "$PLASMA/OneStandsOut/contents/images/2560x1600.jpg|OneStandsOut.jpg"
    "$PLASMA/Path/contents/images/2560x1600.jpg|Path.jpg"
    "$PLASMA/summer_1am/contents/images/2560x1600.jpg|summer_1am.jpg"
)
LOMIRI=usr/share/backgrounds
LOMIRI_WALLPAPERS_1604=(  # CC-BY-4.0, CC-BY-SA-4.0 or CC0-1.0, per file
    "$LOMIRI/Bridge_by_Sander_Klootwijk.jpg|Bridge_by_Sander_Klootwijk.jpg"
    "$LOMIRI/Dragonfly_by_Bolly.jpg|Dragonfly_by_Bolly.jpg"
    "$LOMIRI/Picture_0B_by_freespace.jpg|Picture_0B_by_freespace.jpg"
    "$LOMIRI/Picture_1A_by_freespace.jpg|Picture_1A_by_freespace.jpg"
    "$LOMIRI/Wine_by_Jakkub_Mede.jpg|Wine_by_Jakkub_Mede.jpg"
    "$LOMIRI/aitzgorri_by_Aitzol_Berasategi.jpg|aitzgorri_by_Aitzol_Berasategi.jpg"
    "$LOMIRI/free_by_Peter_Nerlich.jpg|free_by_Peter_Nerlich.jpg"
    "$LOMIRI/friends_by_Aitzol_Berasategi.jpg|friends_by_Aitzol_Berasategi.jpg"
    "$LOMIRI/greentock_by_Peter_Nerlich.jpg|greentock_by_Peter_Nerlich.jpg"
    "$LOMIRI/life_by_Aitzol_Berasategi.jpg|life_by_Aitzol_Berasategi.jpg"
    "$LOMIRI/picosdeeuropa_by_Aitzol_Berasategi.jpg|picosdeeuropa_by_Aitzol_Berasategi.jpg"
    "$LOMIRI/seeding_by_Clements_Engelhardt.jpg|seeding_by_Clements_Engelhardt.jpg"
    "$LOMIRI/sunset_by_Aitzol_Berasategi.jpg|sunset_by_Aitzol_Berasategi.jpg"
)
LOMIRI_WALLPAPERS_2004=(  # CC-BY-SA-3.0
    "$LOMIRI/Kleiber_by_Lukas_Baubkus.jpg|Kleiber_by_Lukas_Baubkus.jpg"
)
# package -> name of its allow-list array
PACKAGES=(
    "mate-backgrounds MATE_BACKGROUNDS"
    "plasma-workspace-wallpapers PLASMA_WORKSPACE_WALLPAPERS"
    "lomiri-wallpapers-16.04 LOMIRI_WALLPAPERS_1604"
    "lomiri-wallpapers-20.04 LOMIRI_WALLPAPERS_2004"
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/get_photos.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST/licences"

placed=0 new=0
for entry in "${PACKAGES[@]}"; do
    read -r pkg list <<<"$entry"
    declare -n files="$list"

    missing=0
    for item in "${files[@]}"; do
        [[ -s "$DEST/${pkg}_${item#*|}" ]] || missing=$((missing + 1))
    done
    if ((missing == 0)) && [[ -s "$DEST/licences/$pkg.copyright" ]]; then
        echo "$pkg: already in data/photos/ (${#files[@]} photos)"
        placed=$((placed + ${#files[@]}))
        unset -n files
        continue
    fi

    command -v apt-get >/dev/null || die "apt-get not found (a Debian or Ubuntu system is" \
        "needed): copy your own photos into data/photos/ instead"
    debs="$WORK/debs-$pkg"
    mkdir -p "$debs"
    # apt fetches as the unprivileged _apt user when run as root: let it write here.
    if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chmod 711 "$WORK" && chown _apt "$debs"; fi
    echo "$pkg: downloading ..."
    if ! (cd "$debs" && apt-get download "$pkg") >"$WORK/apt.log" 2>&1; then
        why="$(grep -E '^(E|Err):' "$WORK/apt.log" | tail -n 1 || true)"
        die "apt-get download $pkg failed${why:+ ($why)}: run apt-get update, or copy your own" \
            "photos into data/photos/"
    fi
    deb="$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
    [[ -n "$deb" ]] || die "apt-get download $pkg left no .deb: run apt-get update, or copy" \
        "your own photos into data/photos/"
    tree="$WORK/tree-$pkg"
    dpkg -x "$deb" "$tree" || die "dpkg -x $(basename "$deb") failed (corrupt download?)"

    if [[ -e "$tree/usr/share/doc/$pkg/copyright" ]]; then
        cp -L "$tree/usr/share/doc/$pkg/copyright" "$DEST/licences/$pkg.copyright"
    else
        echo "warning: $pkg has no usr/share/doc/$pkg/copyright" >&2
    fi

    for item in "${files[@]}"; do
        src="$tree/${item%%|*}" out="$DEST/${pkg}_${item#*|}"
        if [[ ! -e "$src" ]]; then
            echo "warning: ${item%%|*} is not in this version of $pkg: skipped" >&2
            continue
        fi
        if [[ -s "$out" ]] && cmp -s "$src" "$out"; then
            placed=$((placed + 1))
            continue
        fi
        cp -L "$src" "$out.part"
        chmod 644 "$out.part"
        mv -f "$out.part" "$out"
        placed=$((placed + 1)) new=$((new + 1))
    done
    rm -rf "$debs" "$tree"
    unset -n files
done

# Every photo must decode; photos over MAX_SIDE on a side are shrunk in place (none is today).
if python3 -c "import PIL" 2>/dev/null; then
    python3 - "$DEST" "$MAX_SIDE" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

Image.MAX_IMAGE_PIXELS = None  # sizes are checked here instead
dest, max_side = Path(sys.argv[1]), int(sys.argv[2])
bad = []
suffixes = {".jpg", ".jpeg", ".png", ".webp"}
for path in sorted(p for p in dest.iterdir() if p.suffix.lower() in suffixes):
    try:
        with Image.open(path) as img:
            img.load()
            if max(img.size) > max_side:
                size = img.size
                img = img.convert("RGB")
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                img.save(path, quality=95)
                print(f"{path.name}: {size[0]}x{size[1]} downscaled to {img.width}x{img.height}")
    except Exception as e:  # noqa: BLE001
        bad.append(f"{path.name} ({type(e).__name__}: {e})")
if bad:
    sys.exit("get_photos.sh: unreadable photos in data/photos/: " + ", ".join(bad))
EOF
else
    echo "warning: python3 with Pillow not found: photos not checked" >&2
fi

echo "placed $placed photos in $DEST ($new new, $((placed - new)) already there)"
