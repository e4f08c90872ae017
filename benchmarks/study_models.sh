# shellcheck shell=bash
# Shell functions shared by the benchmark scripts that run on either bundled
# model (source it; it runs nothing).

# vocabulary_lines IN OUT: the lines of text IN without those holding the
# characters TinyStories-656K's vocabulary lacks (the mis-encoded quotes "â€œ",
# "â€", "â€™"), written to OUT; its tokenizer has no byte fallback.
vocabulary_lines() {
  python3 -c "
import sys
bad = set('\u00e2\u0153\u201d\u20ac\u2122')
lines = open(sys.argv[1], encoding='utf-8').read().split('\n')
open(sys.argv[2], 'w', encoding='utf-8').write('\n'.join(l for l in lines if not set(l) & bad))" "$1" "$2"
}

# study_model NAME DATA_DIR OUT_DIR: sets model, eval_text and calibration_text
# for NAME, stories260K or tiny656K (TinyStories-656K-Q8_0.gguf, whose texts are
# the bundled ones through vocabulary_lines, written to OUT_DIR); returns 1 for
# another name.
# shellcheck disable=SC2034 # the variables are the caller's
study_model() {
  case $1 in
    stories260K)
      model=$2/stories260K.gguf
      eval_text=$2/tinystories-evaluation.txt calibration_text=$2/tinystories-calibration.txt ;;
    tiny656K)
      model=$2/TinyStories-656K-Q8_0.gguf
      eval_text=$3/tiny656K-evaluation.txt calibration_text=$3/tiny656K-calibration.txt
      vocabulary_lines "$2/tinystories-evaluation.txt" "$eval_text"
      vocabulary_lines "$2/tinystories-calibration.txt" "$calibration_text" ;;
    *) return 1 ;;
  esac
}
