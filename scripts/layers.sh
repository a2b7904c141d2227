#!/bin/sh
# Prints each package's imports inside the module, one line a package, in the
# form docs/design.md ("Packages") shows; scripts/test.sh fails when the two
# differ, so the page's map of the layers is always the code's.
set -eu
m=github.com/apnsd/apnsd/
go list -f '{{.ImportPath}}: {{join .Imports " "}}' ./... | awk -v m="$m" '
{
  p = substr($1, 1, length($1) - 1); sub("^" m, "", p)
  s = ""
  for (i = 2; i <= NF; i++) if (index($i, m) == 1) s = s " " substr($i, length(m) + 1)
  if (s == "") s = " (none)"
  h = p ":"
  if (length(h) < 21) h = sprintf("%-20s", h)
  print h s
}'
