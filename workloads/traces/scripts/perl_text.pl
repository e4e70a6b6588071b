#!/usr/bin/perl
# Text processing: generate lines, split into words, count in a hash, rewrite with regexes,
# sort and join. Recorded with:
# replay record -o workloads/traces/perl-text.csv.zst -- perl workloads/traces/scripts/perl_text.pl
use strict;
use warnings;

my @syllables = qw(ka lo mi ne ru sa ti vo xe zu);
my %count;
my @kept;
for my $line_no (1 .. 2500) {
    my $line = join ' ', map { $syllables[($line_no * $_) % 10] . $syllables[($line_no + $_) % 10] x ($_ % 3 + 1) } 1 .. 12;
    $line =~ s/(ka|mi)(\w*)/\U$1\E$2/g;
    my @words = split /\s+/, $line;
    $count{$_}++ for @words;
    push @kept, join('-', reverse @words) if $line_no % 7 == 0;
    @kept = sort @kept[-200 .. -1] if @kept > 400;
}
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 9];
printf "%d distinct, top %s, kept %d\n", scalar(keys %count), join(',', @top), scalar(@kept);
