// natsbench - the NATS JetStream anchor of bench/streams.sh's end-to-end run, with NATS's own
// Go client (Debian's golang-github-nats-io-go-nats-dev): the load shape of keel-streambench
// (tools/streambench/main.c). P producers publish to one stream (PublishAsync, N in flight
// each); C consumers share one durable pull consumer (Fetch of K, MaxWait 1 s) and
// acknowledge every message (Ack, explicit ack policy: JetStream acknowledges messages one by
// one where XACK takes a batch). Closed loop, or open loop at -rate with each message
// stamped with its intended send time (ns since the run's start, first 8 bytes of the
// payload), so waiting for a free slot counts. Reports the same figures as keel-streambench
// and writes them as JSON (-json).
//
// Built by bench/streams.sh with GO111MODULE=off GOPATH=/usr/share/gocode (no network).
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

var (
	url        = flag.String("url", "nats://127.0.0.1:4222", "server URLs, comma-separated")
	producers  = flag.Int("producers", 4, "producers (one connection each)")
	pipeline   = flag.Int("pipeline", 16, "publishes in flight per producer")
	consumers  = flag.Int("consumers", 4, "consumers of the one durable pull consumer")
	count      = flag.Int("count", 100, "messages per Fetch")
	rate       = flag.Float64("rate", 0, "messages/s in all (0: closed loop)")
	duration   = flag.Int("duration", 10, "seconds of load")
	valueBytes = flag.Int("value-bytes", 100, "payload bytes (at least 8)")
	replicas   = flag.Int("replicas", 3, "stream replicas")
	stream     = flag.String("stream", "BENCH", "stream name (recreated)")
	jsonPath   = flag.String("json", "", "write the figures here")
)

const drainWait = 30 * time.Second

type run struct {
	t0                        time.Time
	added, addErrs, delivered int64
	acked, fetchErrs, ackErrs int64
	scheduled                 int64
	mu                        sync.Mutex
	lat                       []int64 // send to delivery, ns
	addLat                    []int64
	stop                      int32
	lastAck                   int64 // ns since t0
}

func (r *run) now() int64 { return int64(time.Since(r.t0)) }

func (r *run) producer(nc *nats.Conn, idx int, done *sync.WaitGroup) {
	defer done.Done()
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(*pipeline))
	if err != nil {
		panic(err)
	}
	subject := "bench." + *stream
	window := make(chan [2]interface{}, *pipeline)
	var collector sync.WaitGroup
	collector.Add(1)
	go func() { // in publish order: every PubAck or error
		defer collector.Done()
		lat := []int64{}
		for item := range window {
			f, sent := item[0].(nats.PubAckFuture), item[1].(int64)
			select {
			case <-f.Ok():
				atomic.AddInt64(&r.added, 1)
				lat = append(lat, r.now()-sent)
			case <-f.Err():
				atomic.AddInt64(&r.addErrs, 1)
			}
		}
		r.mu.Lock()
		r.addLat = append(r.addLat, lat...)
		r.mu.Unlock()
	}()
	payload := make([]byte, *valueBytes)
	end := time.Duration(*duration) * time.Second
	perProducer := *rate / float64(*producers)
	for k := int64(0); ; k++ {
		var sent int64
		if *rate > 0 {
			intended := time.Duration(float64(k) / perProducer * 1e9)
			if intended >= end {
				break
			}
			if wait := intended - time.Since(r.t0); wait > 0 {
				time.Sleep(wait)
			}
			sent = int64(intended)
			atomic.AddInt64(&r.scheduled, 1)
		} else {
			if time.Since(r.t0) >= end {
				break
			}
			sent = r.now()
		}
		binary.LittleEndian.PutUint64(payload, uint64(sent))
		f, err := js.PublishAsync(subject, payload)
		if err != nil {
			atomic.AddInt64(&r.addErrs, 1)
			continue
		}
		window <- [2]interface{}{f, sent}
	}
	close(window)
	collector.Wait()
}

func (r *run) consumer(nc *nats.Conn, done *sync.WaitGroup) {
	defer done.Done()
	js, err := nc.JetStream()
	if err != nil {
		panic(err)
	}
	sub, err := js.PullSubscribe("bench."+*stream, "g", nats.Bind(*stream, "g"))
	if err != nil {
		panic(err)
	}
	lat := []int64{}
	for atomic.LoadInt32(&r.stop) == 0 {
		msgs, err := sub.Fetch(*count, nats.MaxWait(time.Second))
		if err != nil && err != nats.ErrTimeout {
			atomic.AddInt64(&r.fetchErrs, 1)
		}
		now := r.now()
		for _, m := range msgs {
			if len(m.Data) >= 8 {
				lat = append(lat, now-int64(binary.LittleEndian.Uint64(m.Data)))
			}
			if m.Ack() == nil {
				atomic.AddInt64(&r.acked, 1)
			} else {
				atomic.AddInt64(&r.ackErrs, 1)
			}
		}
		if len(msgs) > 0 {
			atomic.AddInt64(&r.delivered, int64(len(msgs)))
			atomic.StoreInt64(&r.lastAck, r.now())
		}
	}
	r.mu.Lock()
	r.lat = append(r.lat, lat...)
	r.mu.Unlock()
}

func pct(v []int64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	i := int(p * float64(len(v)))
	if i >= len(v) {
		i = len(v) - 1
	}
	return float64(v[i]) / 1e6
}

func setup() {
	nc, err := nats.Connect(*url)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		panic(err)
	}
	js.DeleteStream(*stream)
	deadline := time.Now().Add(30 * time.Second)
	for { // a fresh cluster elects its JetStream meta leader first
		_, err = js.AddStream(&nats.StreamConfig{Name: *stream, Subjects: []string{"bench." + *stream},
			Storage: nats.FileStorage, Replicas: *replicas})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		panic(err)
	}
	_, err = js.AddConsumer(*stream, &nats.ConsumerConfig{Durable: "g", AckPolicy: nats.AckExplicitPolicy,
		MaxAckPending: 100000, AckWait: 30 * time.Second})
	if err != nil {
		panic(err)
	}
}

func main() {
	flag.Parse()
	if *valueBytes < 8 {
		*valueBytes = 8
	}
	setup()
	r := &run{}
	conns := []*nats.Conn{}
	for i := 0; i < *producers+*consumers; i++ {
		nc, err := nats.Connect(*url)
		if err != nil {
			panic(err)
		}
		conns = append(conns, nc)
	}
	r.t0 = time.Now()
	var cons, prods sync.WaitGroup
	for i := 0; i < *consumers; i++ {
		cons.Add(1)
		go r.consumer(conns[*producers+i], &cons)
	}
	for i := 0; i < *producers; i++ {
		prods.Add(1)
		go r.producer(conns[i], i, &prods)
	}
	prods.Wait()
	loadEnd := r.now()
	for t := time.Now(); time.Since(t) < drainWait; time.Sleep(10 * time.Millisecond) {
		if atomic.LoadInt64(&r.delivered) >= atomic.LoadInt64(&r.added) {
			break
		}
	}
	atomic.StoreInt32(&r.stop, 1)
	cons.Wait()
	for _, nc := range conns {
		nc.Flush()
		nc.Close()
	}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	sort.Slice(r.addLat, func(i, j int) bool { return r.addLat[i] < r.addLat[j] })
	loadS := float64(loadEnd) / 1e9
	e2eS := float64(r.lastAck) / 1e9
	if e2eS < loadS {
		e2eS = loadS
	}
	mode := "closed loop"
	if *rate > 0 {
		mode = "open loop"
	}
	fmt.Printf("%d producers x %d in flight, %d consumers (Fetch %d, Ack per message), %d-byte values, %s, R%d\n",
		*producers, *pipeline, *consumers, *count, *valueBytes, mode, *replicas)
	fmt.Printf("publish acknowledged: %d in %.1f s (%.0f/s), errors %d, p99 %.2f ms\n", r.added, loadS,
		float64(r.added)/loadS, r.addErrs, pct(r.addLat, 0.99))
	fmt.Printf("delivered %d, acknowledged %d (fetch errors %d, ack errors %d)\n", r.delivered, r.acked,
		r.fetchErrs, r.ackErrs)
	fmt.Printf("end to end: %.0f messages/s delivered and acknowledged (%.1f s to the last ack)\n",
		float64(r.acked)/e2eS, e2eS)
	fmt.Printf("publish to delivery (ms): p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", pct(r.lat, 0.5),
		pct(r.lat, 0.99), pct(r.lat, 0.999), pct(r.lat, 1))
	if *jsonPath != "" {
		b, _ := json.Marshal(map[string]float64{"added": float64(r.added), "delivered": float64(r.delivered),
			"acked": float64(r.acked), "xadd_per_s": float64(r.added) / loadS,
			"e2e_msgs_per_s": float64(r.acked) / e2eS, "e2e_p50_ms": pct(r.lat, 0.5),
			"e2e_p99_ms": pct(r.lat, 0.99), "e2e_p999_ms": pct(r.lat, 0.999),
			"xadd_p99_ms": pct(r.addLat, 0.99), "rate": *rate})
		os.WriteFile(*jsonPath, b, 0o644)
	}
	if r.delivered < r.added || r.delivered == 0 {
		fmt.Printf("the consumer was delivered %d of %d acknowledged publishes\n", r.delivered, r.added)
		os.Exit(1)
	}
}
