ln src/f src/hard
ln -s /etc/passwd src/abs
ln -s f src/rel
mkdir src/d
ln -s ../f src/d/up
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -cf t.tar -C src .
rm -r src
