tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cf t.tar -C src .
rm -r src
