#!/usr/bin/perl
# Minimal SMPP 3.4 SMSC for tests, on Net::SMPP (Debian: libnet-smpp-perl).
# usage: perl smsc.pl PORT    (listens on 127.0.0.1 only)
# stdout: one line per event (READY, CONNECT, BIND, SUBMIT, DLR_SENT, ENQUIRE_LINK, ...)
# stdin:  "MO <from> <to> <text>" sends a deliver_sm to every receiver/transceiver
# to=000...: submit_sm_resp status 0x0B; to=999...: receipt says stat:UNDELIV
# env SMSC_PASSWORD: if set, other passwords get bind_*_resp status 0x0E
use strict; use warnings; use Net::SMPP; use Encode; use IO::Select;
use POSIX qw(strftime); use Socket qw(IPPROTO_TCP TCP_NODELAY);
$| = 1; $SIG{PIPE} = 'IGNORE';
my $port = shift // 2775;
my $l = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34, async => 1)
    or die "listen on $port: $!";
my $sel = IO::Select->new($l, \*STDIN);
my (%rx, $n);                          # %rx: sessions bound as receiver or transceiver
my %bind = (1 => 'bind_receiver', 2 => 'bind_transmitter', 9 => 'bind_transceiver');
sub deliver { my ($s, $from, $to, $esm, $sm, @tlv) = @_;
  $s->deliver_sm(source_addr => $from, destination_addr => $to, esm_class => $esm,
                 short_message => $sm, async => 1, @tlv) }
print "READY port=$port\n";
while (1) { for my $s ($sel->can_read) {
  if ($s == $l) { my $c = $l->accept or next; $c->setsockopt(IPPROTO_TCP, TCP_NODELAY, 1);
    $sel->add($c); print "CONNECT\n"; next }
  if ($s == \*STDIN) { my $line = <STDIN>; if (!defined $line) { $sel->remove(\*STDIN); next }
    chomp $line; my (undef, $from, $to, $text) = split ' ', $line, 4;
    deliver($_, $from, $to, 0, $text // '') for values %rx;
    print "MO_SENT from=$from to=$to\n"; next }
  my $pdu = $s->read_pdu;
  if (!$pdu) { $sel->remove($s); delete $rx{"$s"}; close $s; print "DISCONNECT\n"; next }
  my ($cmd, $seq) = ($pdu->{cmd}, $pdu->{seq});
  if ($bind{$cmd}) { my $m = "$bind{$cmd}_resp";
    my $st = defined $ENV{SMSC_PASSWORD} && $pdu->{password} ne $ENV{SMSC_PASSWORD} ? 0x0E : 0;
    $s->$m(system_id => 'perlsmsc', seq => $seq, status => $st);
    $rx{"$s"} = $s if !$st && $cmd != 2;
    print "BIND $bind{$cmd} system_id=$pdu->{system_id} password=$pdu->{password} status=$st\n" }
  elsif ($cmd == 0x15) { $s->enquire_link_resp(seq => $seq); print "ENQUIRE_LINK\n" }
  elsif ($cmd == 0x06) { $s->unbind_resp(seq => $seq); print "UNBIND\n" }
  elsif ($cmd == 0x04) { my ($src, $dst) = @$pdu{qw(source_addr destination_addr)};
    my $t = length($pdu->{short_message}) ? $pdu->{short_message} : $pdu->{message_payload} // '';
    my $txt = $t; $txt =~ s/([^\x20-\x7e])/sprintf('\\x%02X', ord $1)/ge;   # raw bytes, escaped
    $txt = encode('UTF-8', decode('UTF-16BE', $t)) if $pdu->{data_coding} == 8;  # UCS-2 as UTF-8
    if ($dst =~ /^000/) { $s->submit_sm_resp(message_id => '', seq => $seq, status => 0x0B);
      print "REJECT to=$dst\n"; next }
    my $id = 1000 + ++$n; $s->submit_sm_resp(message_id => $id, seq => $seq);
    printf "SUBMIT id=%s from=%s to=%s dc=%d esm=%d rd=%d text=%s\n", $id, $src, $dst,
      @$pdu{qw(data_coding esm_class registered_delivery)}, $txt;
    next unless $pdu->{registered_delivery} & 1;
    my ($stat, $err, $state) = $dst =~ /^999/ ? ('UNDELIV', '001', 5) : ('DELIVRD', '000', 2);
    my $d = strftime('%y%m%d%H%M', localtime);
    my $r = "id:$id sub:001 dlvrd:001 submit date:$d done date:$d stat:$stat err:$err text:"
          . substr($t, 0, 20);
    my ($to) = $rx{"$s"} ? ($s) : values %rx;          # same transceiver, else any receiver
    if (!$to) { print "DLR_DROPPED id=$id (no receiver bound)\n"; next }
    deliver($to, $dst, $src, 4, $r, receipted_message_id => "$id\0", message_state => chr $state);
    print "DLR_SENT id=$id stat=$stat\n" }
  elsif ($cmd & 0x80000000) { printf "RESP cmd=0x%08x status=%d\n", $cmd, $pdu->{status} }
  else { $s->generic_nack(seq => $seq, status => 3); printf "NACK cmd=0x%08x\n", $cmd }
} }
