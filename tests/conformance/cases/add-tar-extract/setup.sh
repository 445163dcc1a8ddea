chmod 0700 src/d
ln -s f src/l
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cf t.tar -C src .
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -czf t.tar.gz -C src .
rm -r src
