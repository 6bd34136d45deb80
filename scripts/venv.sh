# Sourced by the set-up scripts: a per-user venv holding exactly `want`, installed once.
# ensure_venv DIR "PACKAGES…" — returns at once when DIR's stamp already names PACKAGES.
ensure_venv() {
  local dir="$1" want="$2" stamp="$1/.xcam-ready"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  echo "==> installing $want into $dir (one time)"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $want
  echo "$want" > "$stamp"
}
