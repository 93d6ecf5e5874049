# shellcheck shell=bash
# The one PATH bootstrap, sourced by the scripts in hack/, by operator/bench/scale.sh
# and by the Makefile's direct cargo targets: Rust from rustup (~/.cargo/bin) and Go
# from its usual place (/usr/local/go/bin), even when the caller's PATH lacks them.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"    # from a script in hack/
for sb_env_dir in "$HOME/.cargo/bin" /usr/local/go/bin; do
  case ":$PATH:" in
    *":$sb_env_dir:"*) ;;
    *) if [ -d "$sb_env_dir" ]; then PATH="$sb_env_dir:$PATH"; fi ;;
  esac
done
unset sb_env_dir
export PATH
