#!/bin/bash
# nbdkit-probing(1), as scripts use it. $1: a scratch directory.
set -u
fail() { echo "probing: $*" >&2; exit 1; }

nbdkit --version >/dev/null 2>&1 || fail "nbdkit is not installed or not working"

# "Test nbdkit >= version", verbatim.
major=$( nbdkit --dump-config | grep ^version_major | cut -d= -f2 )
minor=$( nbdkit --dump-config | grep ^version_minor | cut -d= -f2 )
if [ $major -eq 1 ] && [ $minor -lt 12 ]
  then echo 'nbdkit >= 1.12 is required'; exit 1; fi
echo "version $major.$minor"
version=$( nbdkit --dump-config | grep ^version= | cut -d= -f2 )
case "$version" in
    "$major.$minor".*) ;;
    *) fail "version=$version disagrees with version_major/minor" ;;
esac
nbdkit --version | grep -q "^nbdkit $version" || fail "--version does not say nbdkit $version"

# "Detect if a plugin is installed" / "Detect if a filter is installed".
for plugin in memory file null; do
    nbdkit $plugin --version >/dev/null 2>&1 || fail "plugin $plugin not detected"
done
if nbdkit no-such-plugin --version >/dev/null 2>&1; then fail "a missing plugin was detected"; fi
for filter in cow retry readahead xz; do
    nbdkit --version --filter=$filter null >/dev/null 2>&1 || fail "filter $filter not detected"
done
if nbdkit --version --filter=no-such-filter null >/dev/null 2>&1; then
    fail "a missing filter was detected"
fi
# Each layer's version is listed, outermost first.
layers=$( nbdkit --filter=retry --filter=cow null --version | tail -n +2 | cut -d' ' -f1 | tr '\n' ' ' )
[ "$layers" = "retry cow null " ] || fail "--version listed layers: $layers"
echo "plugins and filters detected"

# nbdkit-captive(1): the backwards compatible --exit-with-parent test.
nbdkit --exit-with-parent --version >/dev/null && echo "exit-with-parent supported"

# "List all plugins in the plugin directory", verbatim: nbdbox has no plugin directory.
plugindir=`nbdkit --dump-config | grep ^plugindir= | sed 's/[^=]*=//'`
for f in $plugindir/nbdkit-*-plugin.so; do
    if nbdkit "$f" --version >/dev/null 2>&1; then
        b=`echo "$f" | sed 's,.*/nbdkit-\(.*\)-plugin.so$,\1,'`
        echo "$b ($f)"
    fi
done

# Later releases' features, probed the way their release notes say.
if nbdkit --dump-config | grep -q '^run_default_socket=Unix'; then
    uri=$( nbdkit memory 1M --run 'echo "$uri"' )
    case "$uri" in nbd+unix://*) echo "--run defaults to a Unix socket" ;; *) fail "--run gave $uri" ;; esac
fi
if nbdkit --dump-config | grep -q '^timeout_option=yes'; then
    nbdkit --timeout=30 memory 1M --run 'nbdinfo --size "$uri"' >/dev/null || fail "--timeout refused"
    echo "--timeout supported"
fi
exit 0
