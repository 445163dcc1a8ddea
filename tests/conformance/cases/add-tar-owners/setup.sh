tar --owner=1234 --group=5678 --numeric-owner --mtime=@1700000000 --sort=name -cf t.tar -C src .
rm -r src
