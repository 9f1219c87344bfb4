// Peer "go-amqp091": github.com/rabbitmq/amqp091-go with publisher confirms.
//
// One Channel.Publish per message on a channel in confirm mode; NotifyPublish delivers
// the confirmations in publish order, and at most --window messages are unconfirmed at
// once. Prints one JSON result line; exits 1 unless every message was acked.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type message struct {
	body []byte
	id   string
}

// loadMessages returns count messages cycling over the non-empty lines of path. Message i
// is line i % lines; its id is that line's string "feedback_id", else strconv.Itoa(i).
func loadMessages(path string, count int) ([]message, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines [][]byte
	var fids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for sc.Scan() {
		line := bytes.TrimRight(sc.Bytes(), "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var doc struct {
			FeedbackID interface{} `json:"feedback_id"`
		}
		fid := ""
		if json.Unmarshal(line, &doc) == nil {
			fid, _ = doc.FeedbackID.(string)
		}
		lines = append(lines, append([]byte(nil), line...))
		fids = append(fids, fid)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%s: no message bodies", path)
	}
	msgs := make([]message, count)
	for i := range msgs {
		j := i % len(lines)
		msgs[i] = message{lines[j], fids[j]}
		if msgs[i].id == "" {
			msgs[i].id = strconv.Itoa(i)
		}
	}
	return msgs, nil
}

type result struct {
	Peer      string  `json:"peer"`
	Count     int     `json:"count"`
	Window    int     `json:"window"`
	ElapsedS  float64 `json:"elapsed_s"`
	MsgPerS   float64 `json:"msg_per_s"`
	Confirmed int     `json:"confirmed"`
	Nacked    int     `json:"nacked"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-amqp091: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	queue := flag.String("queue", "", "durable queue, declared passively")
	count := flag.Int("count", 0, "messages to publish")
	window := flag.Int("window", 1024, "max unconfirmed in flight")
	bodyFile := flag.String("body-file", "", "ndjson, one body a line")
	declare := flag.Bool("declare", false, "declare the queue durable (no arguments) instead of passively")
	flag.Parse()
	if *queue == "" || *bodyFile == "" || *count < 1 || *window < 1 {
		flag.Usage()
		os.Exit(2)
	}
	msgs, err := loadMessages(*bodyFile, *count)
	if err != nil {
		fail("%v", err)
	}

	conn, err := amqp.Dial(*url)
	if err != nil {
		fail("connect: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		fail("channel: %v", err)
	}
	if *declare {
		_, err = ch.QueueDeclare(*queue, true, false, false, false, nil)
	} else {
		_, err = ch.QueueDeclarePassive(*queue, true, false, false, false, nil)
	}
	if err != nil {
		fail("queue %q: %v", *queue, err)
	}
	if err := ch.Confirm(false); err != nil {
		fail("confirm.select: %v", err)
	}
	// Capacity >= window: the library never blocks delivering a confirmation to us.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, *window))

	confirmed, nacked, inFlight := 0, 0, 0
	settle := func() {
		c, ok := <-confirms
		if !ok {
			fail("channel closed with %d unconfirmed", inFlight)
		}
		inFlight--
		if c.Ack {
			confirmed++
		} else {
			nacked++
		}
	}

	start := time.Now()
	for _, m := range msgs {
		if inFlight >= *window {
			settle()
		}
		err := ch.Publish("", *queue, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/json",
			MessageId:    m.id,
			Body:         m.body,
		})
		if err != nil {
			fail("publish: %v", err)
		}
		inFlight++
	}
	for inFlight > 0 {
		settle()
	}
	elapsed := time.Since(start).Seconds()

	out, _ := json.Marshal(result{"go-amqp091", *count, *window, elapsed,
		float64(confirmed) / elapsed, confirmed, nacked})
	fmt.Println(string(out))
	if confirmed != *count {
		conn.Close()
		os.Exit(1)
	}
}
