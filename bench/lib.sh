# Shared by the bench scripts (sourced): the bundled slide tiled as COPIES slides, half lung,
# half skin (512 px JPEGs), made in bench/out/epoch_<COPIES> if missing; prints its path.
epoch_dataset() {
  local copies=$1 bin=$2 dir=bench/out/epoch_$1
  if [ ! -f "$dir/PTCGA200/manifest.csv" ]; then
    mkdir -p "$dir"
    cp assets/cmu1_small_region.svs "$dir/"
    { echo "slide,organ,id"; for i in $(seq 1 "$copies"); do echo "cmu1_small_region.svs,$([ $((i % 2)) = 0 ] && echo lung || echo skin),s$i"; done; } > "$dir/slides.csv"
    "$bin" build ptcga200 --slides "$dir/slides.csv" --out "$dir/PTCGA200" > /dev/null
  fi
  echo "$dir/PTCGA200"
}
