tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cJf t.tar.xz -C src .
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cjf t.tar.bz2 -C src .
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -czf t.tgz -C src .
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cf t.tar -C src .
rm -r src
